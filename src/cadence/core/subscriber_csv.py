"""Reading a subscriber CSV of any size, one record at a time, and checking every field.

What a marketer's export looks like decides the shape of this module (Mailchimp, Excel, Google
Sheets, listmonk): headers such as ``Email Address``, ``E-mail`` or ``First Name``; ``;`` as the
delimiter where the decimal separator is a comma; a UTF-8 byte order mark from Excel's "CSV
UTF-8"; and now and then a Latin-1 byte. So:

- bytes are decoded line by line: every byte that is not UTF-8 is reported with its line and
  column, all of them in one pass (the row holding it is rejected, nothing is guessed); the
  error report shows such a byte as the Windows-1252 letter it most likely was (:func:`readable`),
  never as U+FFFD, so the marketer can check it and re-import the report;
- the delimiter is sniffed from the header line (``,`` ``;`` or tab), a BOM is dropped;
- header names are compared without case, spaces, hyphens or underscores, with aliases;
  every other column becomes an attribute (``Training for race`` → ``training_for_race``);
- every field of every row is checked; a row yields either a :class:`SubscriberInput` or its
  problems (line, field, reason), never both;
- the same address twice in one file is a problem on the later line (the first one counts).

Memory stays bounded: one record at a time, plus 12 bytes per distinct address to find
duplicates (:class:`SeenAddresses`).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from cadence.core.subscriber_fields import SubscriberInput, check_text, check_timezone, email_key, normalise_email
from cadence.errors import InputError

# Normalised header name (see column_key) → the field it means.
HEADER_ALIASES = {
    "email": "email",
    "e_mail": "email",
    "email_address": "email",
    "e_mail_address": "email",
    "emailaddress": "email",
    "mail": "email",
    "first_name": "first_name",
    "firstname": "first_name",
    "first": "first_name",
    "given_name": "first_name",
    "forename": "first_name",
    "name": "first_name",
    "timezone": "timezone",
    "time_zone": "timezone",
    "tz": "timezone",
    # Tags, as Mailchimp exports them ("TAGS": `"vip","customer"`) and as `subscribers export`
    # writes them (`vip,customer`): real tags, not an attribute named "tags" (issue 13 trial).
    "tags": "tags",
    "tag": "tags",
}
# Columns `cadence subscribers export` writes that Cadence itself keeps: re-importing an edited
# export must not turn them into attributes (a subscriber's status changes only by confirm,
# unsubscribe or suppress, never by import).
EXPORT_COLUMNS = frozenset({"status", "source", "created_at", "confirmed_at", "unsubscribed_at"})
_TAG = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,99}$")
DELIMITERS = (",", ";", "\t")
# The last column of our own error report (operations/subscriber_import.py): skipped when the report is
# imported again after the fixes, instead of becoming an attribute.
ERROR_COLUMN = "error"
IGNORED = "-"  # the meaning of a column read and dropped on purpose
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def column_key(header: str) -> str:
    """``Email Address`` → ``email_address``: lowercase, runs of anything but letters and digits
    as one ``_``. Attribute names come out the way segment rules spell them."""
    return re.sub(r"[\W_]+", "_", header.strip().lower()).strip("_")


@dataclass(frozen=True)
class Problem:
    """One reason a row cannot be imported. ``line`` is the physical line (1 = the header) where
    the record starts, or where the bad byte is; ``field`` the column ('' for the whole row)."""

    line: int
    field: str
    reason: str
    row: str = ""  # the record as read, to put in the error report
    record: tuple[str, ...] = ()  # its fields, bad bytes as readable letters (see readable)

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}" if self.field else f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class CheckedRow:
    line: int
    subscriber: SubscriberInput
    record: tuple[str, ...] = ()  # the fields as read, for the error report (a suppressed row)


@dataclass(frozen=True)
class Header:
    """The header line as the file has it: the names, what each column means (email,
    first_name, timezone, an attribute name, ``-`` for our error column, '' for no name) and the
    delimiter; given to ``read_rows(on_header=...)``."""

    names: tuple[str, ...]
    fields: tuple[str, ...]
    delimiter: str


def _is_escaped(ch: str) -> bool:
    return "\udc80" <= ch <= "\udcff"


def readable(value: str) -> str:
    """`value` with each byte that was not UTF-8 (kept as a surrogate escape) shown as the
    Windows-1252 letter it most likely was (Excel's "CSV" on Windows writes that code page):
    ``Jos\\xe9`` reads "José" in the error report, for a person to check."""
    if not any(_is_escaped(ch) for ch in value):
        return value
    out = []
    for ch in value:
        if _is_escaped(ch):
            byte = bytes([ord(ch) - 0xDC00])
            try:
                out.append(byte.decode("cp1252"))
            except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: no letter in cp1252
                out.append(byte.decode("latin-1"))
        else:
            out.append(ch)
    return "".join(out)


class SeenAddresses:
    """Which addresses a file already had, and on which line: an open-addressing hash table of
    64-bit digests in two arrays (12 bytes a slot) instead of a dict of strings (~110 bytes an
    entry), so a 10-million-row file needs ~240 MB less. Two addresses share a digest with a
    probability of ~n²/2⁶⁵ (3·10⁻⁸ for a million): then the later row is reported a duplicate."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._digests = array("Q", bytes(8 * capacity))
        self._lines = array("I", bytes(4 * capacity))
        self._used = 0

    def first_line(self, key: str, line: int) -> int | None:
        """The line `key` was first seen on; or None, remembering `line` for it."""
        digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        mask = len(self._digests) - 1
        slot = digest & mask
        while True:
            stored = self._digests[slot]
            if stored == 0:
                break
            if stored == digest:
                return int(self._lines[slot])
            slot = (slot + 1) & mask
        self._digests[slot], self._lines[slot] = digest, line
        self._used += 1
        if self._used * 2 > len(self._digests):
            self._grow()
        return None

    def _grow(self) -> None:
        digests, lines = self._digests, self._lines
        capacity = len(digests) * 2
        self._digests = array("Q", bytes(8 * capacity))
        self._lines = array("I", bytes(4 * capacity))
        mask = capacity - 1
        for digest, line in zip(digests, lines, strict=True):
            if digest:
                slot = digest & mask
                while self._digests[slot]:
                    slot = (slot + 1) & mask
                self._digests[slot], self._lines[slot] = digest, line


@dataclass
class _BadByte:
    line: int
    column: int
    byte: int


class _Lines:
    """The file's lines as text, each decoded on its own: bad bytes become surrogate escapes
    (U+DC80..U+DCFF, PEP 383) and are noted with their line and column (1-based, in characters)
    for the record that holds them."""

    def __init__(self, raw_lines: Iterable[bytes], on_bytes: Callable[[int], None] | None) -> None:
        self._raw = iter(raw_lines)
        self._on_bytes = on_bytes
        self.number = 0
        self.bad: list[_BadByte] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = next(self._raw)
        self.number += 1
        if self._on_bytes is not None:
            self._on_bytes(len(raw))
        if self.number == 1:
            if raw.startswith(_UTF16_BOMS):
                raise InputError("line 1: the file is UTF-16 (Excel's 'Unicode text'): save it as 'CSV UTF-8'")
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        start = 0
        while True:
            try:
                raw[start:].decode("utf-8")
                break
            except UnicodeDecodeError as exc:
                at = start + exc.start
                column = len(raw[:at].decode("utf-8", "replace")) + 1
                self.bad.append(_BadByte(self.number, column, raw[at]))
                start = start + exc.end
        return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class _Header:
    fields: tuple[str, ...]  # per column: email, first_name, timezone, an attribute name, or ''


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])  # ties (none at all): the first, ','
    return best if counts[best] else ","


def _read_header(names: list[str]) -> _Header:
    # A file with our export's columns is an edited export: its bookkeeping columns are ignored.
    exported = {column_key(n) for n in names} >= EXPORT_COLUMNS
    fields: list[str] = []
    meaning: dict[str, str] = {}
    for number, name in enumerate(names, 1):
        if number == len(names) > 1 and name.strip() == ERROR_COLUMN:
            fields.append(IGNORED)  # our error report, imported again after the fixes
            continue
        key = column_key(name)
        field = HEADER_ALIASES.get(key, key)
        if field in EXPORT_COLUMNS and exported:
            fields.append(IGNORED)
            continue
        if field and field in meaning:
            raise InputError(f"line 1: columns {meaning[field]!r} and {name.strip()!r} both mean {field}")
        if field:
            meaning[field] = name.strip()
        fields.append(field)
    if "email" not in meaning:
        raise InputError(
            "line 1: the header must have an 'email' column (or 'Email Address', 'E-mail'); "
            f"found {', '.join(repr(n) for n in names) or 'nothing'}"
        )
    return _Header(tuple(fields))


def read_rows(
    raw_lines: Iterable[bytes],
    *,
    on_bytes: Callable[[int], None] | None = None,
    on_header: Callable[[Header], None] | None = None,
) -> Iterator[CheckedRow | list[Problem]]:
    """Each record of the file in order: a CheckedRow, or the list of its problems. A file that
    cannot be read as a subscriber CSV at all (no email column, UTF-16, a broken quote that
    swallows the rest) raises InputError naming the line."""
    lines = _Lines(raw_lines, on_bytes)
    try:
        first = next(lines)
    except StopIteration:
        raise InputError("line 1: the file is empty (it needs a header with an 'email' column)") from None
    delimiter = _sniff_delimiter(first)
    header_fields = next(csv.reader([first], delimiter=delimiter), [])
    if lines.bad:
        first_bad = lines.bad[0]
        raise InputError(f"line 1, column {first_bad.column}: byte 0x{first_bad.byte:02X} in the header is not UTF-8")
    header = _read_header(header_fields)
    if on_header is not None:
        on_header(Header(tuple(n.strip() for n in header_fields), header.fields, delimiter))
    reader = csv.reader(lines, delimiter=delimiter)
    seen = SeenAddresses()
    end_of_previous = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"line {end_of_previous + 1}: {exc} (a quote left open?)") from None
        # A quoted field may span lines: report where the record starts, as an editor shows it.
        line, end_of_previous = end_of_previous + 1, lines.number
        bad, lines.bad = lines.bad, []
        if not any(value.strip() for value in record):
            # A blank line, or one of separators and spaces only: what a spreadsheet exports for
            # rows that once held data (";;;;;;"). Nobody is on it, so it is no error either.
            continue
        yield _check(record, line, header, bad, seen, delimiter)


def _check(
    record: list[str], line: int, header: _Header, bad: list[_BadByte], seen: SeenAddresses, delimiter: str
) -> CheckedRow | list[Problem]:
    problems: list[Problem] = []

    shown = tuple(readable(value) for value in record)

    def problem(field: str, reason: str, at: int = line) -> None:
        problems.append(Problem(at, field, reason, _as_csv(list(shown), delimiter), shown))

    if bad:
        # The k-th bad byte of the record became the k-th escape: name the column that holds it.
        holders = [
            (header.fields[i] or f"column {i + 1}") if i < len(header.fields) else f"column {i + 1}"
            for i, value in enumerate(record)
            for _ in range(sum(_is_escaped(ch) for ch in value))
        ]
        for k, byte in enumerate(bad):
            where = holders[k] if k < len(holders) else ""
            reason = f"byte 0x{byte.byte:02X} at column {byte.column} is not UTF-8 (save the file as CSV UTF-8)"
            problem(where, reason, byte.line)
    if len(record) > len(header.fields):
        problem("", f"more fields than the header has ({len(record)} for {len(header.fields)})")
    values: dict[str, str] = {}
    for number, (field, value) in enumerate(zip(header.fields, record, strict=False), 1):
        value = value.strip()
        if field == IGNORED:
            continue
        if not field:
            if value:
                problem(f"column {number}", "a value under a column without a name")
            continue
        values[field] = value
    if bad or problems:
        return problems
    email = first_name = ""
    timezone: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, str] = {}
    values.setdefault("email", "")
    for field, value in values.items():
        try:
            if field == "email":
                email = normalise_email(value, "email") if value else _missing("email")
            elif field == "first_name":
                first_name = check_text(value, "first_name")
            elif field == "timezone":
                timezone = check_timezone(value or None)
            elif field == "tags":
                tags = _tags(value)
            elif value:
                attributes[field] = check_text(value, field, 500)
        except InputError as exc:
            problem(field, str(exc).removeprefix(f"{field}: "))
    if not problems:
        earlier = seen.first_line(email_key(email), line)
        if earlier is not None:
            problem("email", f"{email} already on line {earlier}")
    if problems:
        return problems
    return CheckedRow(line, SubscriberInput(email, first_name, timezone, attributes, tags), shown)


def parse_tags(value: str) -> tuple[str, ...]:
    """A comma-separated list of tags as a ``Tags`` column is read (InputError naming a bad one)."""
    return _tags(value)


def _tags(value: str) -> tuple[str, ...]:
    """``"vip","Race Day"`` or ``vip, race-day`` → ``("vip", "race-day")``: lowercased, spaces
    as ``-`` (the tag rules of ``subscribers tag``)."""
    tags: list[str] = []
    for part in value.split(","):
        tag = re.sub(r"\s+", "-", part.strip().strip('"').strip().lower())
        if not tag:
            continue
        if not _TAG.match(tag):
            raise InputError(f"{part.strip()!r} is not a tag (letters, digits, '-', '_', '.', ':'; up to 100)")
        tags.append(tag)
    return tuple(dict.fromkeys(tags))


def _as_csv(record: list[str], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(record)
    return out.getvalue()


def _missing(field: str) -> str:
    raise InputError(f"{field}: empty")


def parse_subscriber_csv(text: str, source: str = "CSV") -> list[SubscriberInput]:
    """Parse and check a whole CSV held in memory (the demo's, a test's); raise one InputError
    listing every problem, each as ``source: line N: field: reason``. Files of any size stream
    through cadence.operations.subscriber_import instead; both read rows with :func:`read_rows`."""
    rows: list[SubscriberInput] = []
    problems: list[str] = []
    try:
        for item in read_rows(io.BytesIO(text.encode("utf-8"))):
            if isinstance(item, CheckedRow):
                rows.append(item.subscriber)
            else:
                problems.extend(f"{source}: {problem}" for problem in item)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    if problems:
        raise InputError("\n".join(problems))
    return rows
