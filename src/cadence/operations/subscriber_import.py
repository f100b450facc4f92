"""Import subscribers from a CSV file of any size: ``cadence subscribers import``.

The file streams through :mod:`cadence.core.subscriber_csv` (one record at a time, every field
checked) into chunks of ``chunk_size`` rows, each stored in a few statements
(:mod:`cadence.db.imports`). Memory stays bounded whatever the file's size.

Two ways to treat bad rows, chosen per run:

- **all or nothing** (the default): one transaction; the file is read to the end so that every
  problem is reported at once, then, if there was any, rolled back and
  :class:`ImportRejected` raised: nothing is written.
- **skip invalid**: each chunk commits on its own; the valid rows are stored and every bad row
  goes to the error report.

The error report is a CSV that can be fixed and imported again: the file's own header and
delimiter, each rejected (or suppressed) row with its fields as read, and one more column last,
``error``, saying what is wrong with it (line, column, reason). The importer skips that column
when the report comes back. A byte that was not UTF-8 appears as the Windows-1252 letter it most
likely was, and the ``error`` column names its line and column.

An upsert never changes a subscriber's status (an import never resubscribes anyone) and skips
suppressed addresses (bounced, complained, erased), naming them. Rows whose name, time zone and
attributes are already as stored count as unchanged and are not written.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.core.subscriber_csv import ERROR_COLUMN, CheckedRow, Header, Problem, read_rows
from cadence.core.subscriber_fields import SubscriberInput, email_key
from cadence.core.suppression_keys import PLAIN, SuppressionKeys
from cadence.db import imports
from cadence.db.session import session_factory
from cadence.db.subscriber_search import add_tags
from cadence.errors import InputError
from cadence.operations.exit_goals import end_reached_goals
from cadence.operations.subscribers import ImportResult, find_suppression

CHUNK_SIZE = 1000
SHOWN_PROBLEMS = 100  # kept in memory for the message; the error report has every one
SHOWN_SUPPRESSED = 20
SUPPRESSED_REASON = "suppressed (it bounced, complained or was erased): not imported"
BAD_BYTES_NOTE = "bytes that are not UTF-8 are shown here as Windows-1252 letters: check them"


@dataclass
class ImportReport:
    """What an import did. Counts are of rows; ``rejected`` rows had at least one problem."""

    source: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: int = 0
    suppressed_addresses: list[str] = field(default_factory=list)  # the first SHOWN_SUPPRESSED
    rejected: int = 0
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)  # the first SHOWN_PROBLEMS
    error_report: Path | None = None
    committed: bool = False
    header: Header | None = None  # the file's header, for the column findings
    tags_added: int = 0  # from a "Tags" column; a row whose only news is a tag counts unchanged
    topics: tuple[str, ...] = ()  # --topic: every imported row joins these newsletter topics
    topics_joined: int = 0
    tags: tuple[str, ...] = ()  # tags every imported row gets (the console's "tag everyone")
    goals_reached: int = 0  # drip enrollments ended because the new tags or answers met their exit goal
    # attribute -> value -> rows, up to DISTINCT_VALUES values each: the segment rules' values
    # are checked against them after the import (cadence.core.column_findings.value_findings).
    values: dict[str, dict[str, int]] = field(default_factory=dict)


class ImportRejected(InputError):
    """An all-or-nothing import found bad rows: nothing was written. Carries the report."""

    def __init__(self, report: ImportReport) -> None:
        self.report = report
        shown = [f"{report.source}: {p}" for p in report.problems]
        more = report.problem_count - len(shown)
        if more > 0:
            where = f"all of them are in {report.error_report}" if report.error_report else "--errors FILE lists all"
            shown.append(f"... and {more} more ({where})")
        shown.append(
            f"{report.rejected} of {report.rows} rows have problems: nothing was imported "
            "(fix them, or --skip-invalid to load the valid rows)"
        )
        super().__init__("\n".join(shown))


def import_csv(
    database_url: str,
    path: Path,
    now: datetime,
    *,
    keys: SuppressionKeys,
    skip_invalid: bool = False,
    error_report: Path | None = None,
    chunk_size: int = CHUNK_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
    topics: Sequence[str] = (),
    tags: Sequence[str] = (),
    on_report: Callable[[ImportReport, int], None] | None = None,
    goals: Sequence[Campaign] = (),
) -> ImportReport:
    """Import the CSV at `path` (see the module docstring). `error_report` is written when
    given (every bad row and every suppressed address). `on_progress(rows, bytes)` is called
    after each chunk, and `on_report(report, bytes)` with the counts so far (the console's job
    page; in all-or-nothing mode they are not committed until the end). `tags`: added to every
    imported row, as a ``Tags`` column would. `goals`: the campaigns with an exit goal
    (``exit_goals.goal_campaigns``, read once); drips whose goal the new tags or answers meet end
    at once, a chunk at a time. Raises InputError for a file that cannot be read as a subscriber CSV and
    ImportRejected when an all-or-nothing import found bad rows."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a CSV file")
    if error_report is not None and error_report.resolve() == path.resolve():
        raise InputError(f"{error_report}: the error report would overwrite the file being imported")
    report = ImportReport(source=str(path), error_report=error_report, topics=tuple(topics), tags=tuple(tags))
    bytes_read = 0

    def count_bytes(n: int) -> None:
        nonlocal bytes_read
        bytes_read += n

    try:
        source = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with source, _ReportWriter(error_report) as writer, session_factory(database_url)() as session:
        chunk: list[CheckedRow] = []

        def header_read(header: Header) -> None:
            report.header = header
            writer.start(header)

        def flush() -> None:
            if chunk and (skip_invalid or not report.problem_count):
                _store(session, chunk, now, report, writer, keys, goals)
                if skip_invalid:
                    session.commit()
            chunk.clear()
            if on_progress is not None:
                on_progress(report.rows, bytes_read)
            if on_report is not None:
                on_report(report, bytes_read)

        try:
            for item in read_rows(source, on_bytes=count_bytes, on_header=header_read):
                report.rows += 1
                if isinstance(item, CheckedRow):
                    _count_values(report.values, item.subscriber.attributes)
                    chunk.append(item)
                    if len(chunk) >= chunk_size:
                        flush()
                    continue
                _rejected(report, item)
                writer.write(item)
            flush()
        except InputError as exc:  # the file as a whole: its header, an open quote, UTF-16
            session.rollback()
            raise InputError(f"{path}: {exc}") from None
        if report.problem_count and not skip_invalid:
            session.rollback()
            raise ImportRejected(report)
        session.commit()
    report.committed = True
    return report


def scan_csv(path: Path, *, limit: int) -> tuple[ImportReport, bool]:
    """Read the first `limit` rows of `path` as the import would (every field checked, the values
    counted) and write nothing: the console's check before an import. The report, and whether
    that was the whole file. InputError for a file that cannot be read as a subscriber CSV."""
    report = ImportReport(source=str(path))

    def header_read(header: Header) -> None:
        report.header = header

    with path.open("rb") as source:
        for item in read_rows(source, on_header=header_read):
            if report.rows >= limit:
                return report, False
            report.rows += 1
            if isinstance(item, CheckedRow):
                _count_values(report.values, item.subscriber.attributes)
                continue
            _rejected(report, item)
    return report, True


def _rejected(report: ImportReport, problems: Sequence[Problem]) -> None:
    """Count a bad row and keep its first problems for the summary (import and check alike)."""
    report.rejected += 1
    for problem in problems:
        report.problem_count += 1
        if len(report.problems) < SHOWN_PROBLEMS:
            report.problems.append(problem)


DISTINCT_VALUES = 50  # per column: a free-text column (notes, dates) stops being counted there


def _count_values(counts: dict[str, dict[str, int]], attributes: Mapping[str, Any]) -> None:
    for attribute, value in attributes.items():
        seen = counts.setdefault(attribute, {})
        key = str(value).strip().lower()
        if key in seen:
            seen[key] += 1
        elif len(seen) < DISTINCT_VALUES:
            seen[key] = 1


def store_rows(
    session: Session,
    rows: Iterable[SubscriberInput],
    now: datetime,
    *,
    keys: SuppressionKeys,
    goals: Sequence[Campaign] = (),
) -> ImportResult:
    """Upsert rows already in memory (checked by the caller) in `session`, by chunks (`goals`:
    as for :func:`import_csv`)."""
    report = ImportReport(source="")
    chunk: list[CheckedRow] = []
    for line, row in enumerate(rows, 2):
        chunk.append(CheckedRow(line, row))
        if len(chunk) >= CHUNK_SIZE:
            _store(session, chunk, now, report, None, keys, goals)
            chunk.clear()
    _store(session, chunk, now, report, None, keys, goals)
    return ImportResult(report.created, report.updated, report.suppressed, report.unchanged)


def _store(
    session: Session,
    chunk: Sequence[CheckedRow],
    now: datetime,
    report: ImportReport,
    writer: _ReportWriter | None,
    suppression_keys: SuppressionKeys,
    goals: Sequence[Campaign] = (),
) -> None:
    """Upsert one chunk: suppressed addresses skipped, new rows inserted, changed rows updated,
    the rest counted unchanged. Never touches a status (no resubscribing by import). Existing
    subscribers whose tags or answers changed are handed to ``exit_goals.end_reached_goals``
    together (new ones have no enrollment yet)."""
    if not chunk:
        return
    keys = [email_key(row.subscriber.email) for row in chunk]
    # Every digest a suppression of each address may be stored under: plain SHA-256 (bounces,
    # complaints) and the keyed hashes an erase leaves, under the current and older secrets
    # (cadence.core.suppression_keys).
    candidates = [suppression_keys.candidates(key) for key in keys]
    found = imports.suppressed_hashes(session, [d for c in candidates for d in c])
    blocked = [not found.keys().isdisjoint(c) for c in candidates]
    for key, digests in zip(keys, candidates, strict=True):
        matched = [found[d] for d in digests if d in found]
        if any(_stale(version, reason, suppression_keys) for version, reason in matched):
            find_suppression(session, key, suppression_keys)  # re-keys it: how the key rotates
    wanted = [key for key, is_blocked in zip(keys, blocked, strict=True) if not is_blocked]
    stored = imports.existing_subscribers(session, wanted)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row, key, is_blocked in zip(chunk, keys, blocked, strict=True):
        data = row.subscriber
        if is_blocked:
            report.suppressed += 1
            if len(report.suppressed_addresses) < SHOWN_SUPPRESSED:
                report.suppressed_addresses.append(data.email)
            if writer is not None:
                writer.write([Problem(row.line, "email", SUPPRESSED_REASON, data.email, row.record)])
            continue
        old = stored.get(key)
        if old is None:
            inserts.append(_new_subscriber(data, key, now))
            report.created += 1
            continue
        first_name = data.first_name or old.first_name
        timezone = data.timezone or old.timezone
        attributes = {**old.attributes, **data.attributes}
        if (first_name, timezone, attributes) == (old.first_name, old.timezone, old.attributes):
            report.unchanged += 1
            continue
        updates.append(
            {"id": old.id, "first_name": first_name, "timezone": timezone, "attributes": attributes, "updated_at": now}
        )
        report.updated += 1
    imports.insert_subscribers(session, inserts)
    imports.update_subscribers(session, updates)
    answered = [row["id"] for row in updates]
    if goals and answered:
        report.goals_reached += end_reached_goals(session, goals, answered, now, answers_changed=True)
    # A "Tags" column (cadence.core.subscriber_csv): added once the rows exist, so new rows have ids.
    tagged = {
        key: (*row.subscriber.tags, *report.tags)
        for row, key, is_blocked in zip(chunk, keys, blocked, strict=True)
        if (row.subscriber.tags or report.topics or report.tags) and not is_blocked
    }
    if tagged:
        ids = imports.existing_subscribers(session, list(tagged))
        for topic in report.topics:  # --topic: consent given outside Cadence, recorded as "import"
            report.topics_joined += imports.add_topics(session, [s.id for s in ids.values()], topic, now, "import")
        existed = {s.id for s in stored.values()}
        by_tag: dict[str, list[int]] = defaultdict(list)
        for key, tags in tagged.items():
            for tag in dict.fromkeys(tags):
                if key in ids:
                    by_tag[tag].append(ids[key].id)
        for tag, subscriber_ids in by_tag.items():
            report.tags_added += add_tags(session, subscriber_ids, [tag], now)
            if goals:  # new subscribers have no drip yet
                tagged_before = [i for i in subscriber_ids if i in existed]
                report.goals_reached += end_reached_goals(session, goals, tagged_before, now, tags_added=[tag])


def _stale(version: str, reason: str, keys: SuppressionKeys) -> bool:
    """An erase row under an older key, or a plain one from before keyed hashes (rare: the
    address is then looked up alone, which re-keys the row)."""
    return version not in (PLAIN, keys.current.version) or (version == PLAIN and reason == "erased")


def _new_subscriber(data: SubscriberInput, key: str, now: datetime) -> dict[str, Any]:
    # Staff imports are active at once, as `subscribers add` (the staff vouch for consent).
    return {
        "email": data.email,
        "email_key": key,
        "first_name": data.first_name,
        "timezone": data.timezone,
        "attributes": dict(data.attributes),
        "status": "active",
        "source": "import",
        "created_at": now,
        "updated_at": now,
        "confirmed_at": now,
        "soft_bounces": 0,
        "consent": {},
    }


class _ReportWriter:
    """The error report (see the module docstring): UTF-8 with a BOM, so Excel opens it right.
    Opened at :meth:`start`, once the header is known. Does nothing without a path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._width = self._read_width = 0

    def __enter__(self) -> _ReportWriter:
        return self

    def start(self, header: Header) -> None:
        if self.path is None:
            return
        try:
            self._file = self.path.open("w", encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the error report ({exc.strerror or exc})") from None
        names = [name for name, meaning in zip(header.names, header.fields, strict=True) if meaning != "-"]
        self._width = len(names)
        self._read_width = len(header.names)  # with the old error column of a re-imported report
        self._writer = csv.writer(self._file, delimiter=header.delimiter)
        self._writer.writerow([*names, ERROR_COLUMN])

    def write(self, problems: Sequence[Problem]) -> None:
        """One row: the record's fields (padded or cut to the header's width, the surplus named
        in the error) and every problem of it, in the ``error`` column."""
        if self._writer is None or not problems:
            return
        fields = list(problems[0].record[: self._width])
        fields += [""] * (self._width - len(fields))
        errors = "; ".join(str(p) for p in problems)
        surplus = problems[0].record[self._read_width :]
        if any(value.strip() for value in surplus):
            errors += f" (the extra fields were: {' | '.join(surplus)})"
        if any(p.reason.startswith("byte 0x") for p in problems):
            errors += f" ({BAD_BYTES_NOTE})"
        self._writer.writerow([*fields, errors])

    def __exit__(self, *_: object) -> None:
        if self._file is not None:
            self._file.close()
