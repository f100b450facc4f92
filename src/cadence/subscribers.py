"""Subscriber use cases: add, import, unsubscribe, suppress. Plain functions over a Session.

A suppressed address (bounced, complained, erased) receives nothing from any path, and a
re-import never brings back someone who unsubscribed: imports only add or update attributes.

Erased addresses are suppressed by a keyed hash (cadence.suppression_keys), so every door that
must refuse them (imports, staff adds, signups) passes the :class:`SuppressionKeys`. Only a
confirmed double opt-in lifts an erase suppression (operations/signup.py); a bounce or complaint
suppression is never lifted.
"""

from __future__ import annotations

import functools
import io
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cadence.core.message import check_header_text, validate_addr_spec
from cadence.db.models import Enrollment, Subscriber, Suppression
from cadence.errors import InputError
from cadence.suppression_keys import PLAIN, SuppressionKeys, plain_hash

_CONTROL = {"\r", "\n", "\x00"}


def email_key(email: str) -> str:
    return email.strip().lower()


def email_hash(email: str) -> str:
    """The plain suppression hash: SHA-256 of the lowercased address (``hash_version`` sha256)."""
    return plain_hash(email_key(email))


def normalise_email(email: str, field_name: str = "email") -> str:
    """A syntactically valid address (RFC 5321/5322 via email-validator) that our message builder
    can also send to (a plain ASCII local part: no SMTPUTF8), or InputError. Checking here, at
    the door, means an address can never be stored and then fail at every send."""
    if any(ch in email for ch in _CONTROL):
        raise InputError(f"{field_name}: contains a line break or NUL")
    fast = _plain_address(email.strip())
    if fast is not None:
        return fast
    try:
        # No DNS here: imports of thousands of rows must not wait on the network.
        normalized = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InputError(f"{field_name}: {email!r} is not a valid email address ({exc})") from None
    validate_addr_spec(field_name, normalized)
    return normalized


def _plain_address(email: str) -> str | None:
    """The common case in one regex and a cached domain check: an ASCII dot-atom ``local@domain``
    comes out exactly as email-validator normalises it (local part kept, domain normalised),
    at ~1/20 of its cost: email-validator spends most of its ~200 µs on the domain (IDNA), and
    a list of a million addresses has a few thousand domains (bench/import.py). Anything else
    (quoted local parts, IDN, errors) returns None and takes the full path, so the result
    and the error messages stay email-validator's."""
    if not email.isascii():
        return None
    try:
        validate_addr_spec("email", email)  # dot-atom local part, LDH labels, RFC 5321 lengths
    except InputError:
        return None
    local, _, domain = email.rpartition("@")
    normalised_domain = _domain_as_normalised(domain)
    return None if normalised_domain is None else f"{local}@{normalised_domain}"


@functools.lru_cache(maxsize=65536)
def _domain_as_normalised(domain: str) -> str | None:
    try:
        return validate_email(f"postmaster@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def check_timezone(name: str | None, field_name: str = "timezone") -> str | None:
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"{field_name}: {name!r} is not an IANA time zone such as America/New_York") from None
    return name


# Joiners some scripts need inside words (Persian, Hindi, Sinhala...): allowed between two
# letters or marks, nowhere else (a loose form of RFC 5892's CONTEXTJ rule).
_JOINERS = {"\u200c", "\u200d"}
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def check_text(value: str, field_name: str, limit: int = 200) -> str:
    """`value` normalised to NFC and stripped, or InputError naming the field (and the code
    point, never the value): no controls (Cc), no invisible format characters (Cf: bidi
    overrides such as U+202E, zero-width spaces, U+FEFF), no lone surrogates (Cs), no line or
    paragraph separators. Such characters reach ``To:`` display names and greetings, where they
    reverse or hide text (issue 10; Unicode TR 36 §2.1). Zero-width (non-)joiners are kept
    between letters, where scripts such as Persian need them."""
    if any(ch in value for ch in _CONTROL):
        raise InputError(f"{field_name}: contains a line break or NUL")
    check_header_text(field_name, value)  # names end up in To: headers (its message for CR, LF...)
    value = unicodedata.normalize("NFC", value)
    for index, ch in enumerate(value):
        if ch == "\ufffd":  # what invalid UTF-8 in a form decodes to: the text was lost on the way
            raise InputError(f"{field_name}: contains a character that is not valid text (U+FFFD); type plain text")
        if unicodedata.category(ch) not in _REFUSED_CATEGORIES:
            continue
        if (
            ch in _JOINERS
            and 0 < index < len(value) - 1
            and _is_letter(value[index - 1])
            and _is_letter(value[index + 1])
        ):
            continue
        kind = "a control" if unicodedata.category(ch) == "Cc" else "an invisible formatting"
        raise InputError(f"{field_name}: contains {kind} character (U+{ord(ch):04X}); type plain text")
    if len(value) > limit:
        raise InputError(f"{field_name}: is longer than {limit} characters")
    return value.strip()


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] in ("L", "M")


def is_suppressed(session: Session, email: str, keys: SuppressionKeys | None = None) -> bool:
    """Whether `email` is suppressed. Without `keys`, only plain rows count (enough for people
    on the list: an erased person has no row to send to); every door that adds people passes
    `keys` so erased addresses are refused too."""
    if keys is None:
        return session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash(email))) is not None
    return find_suppression(session, email, keys) is not None


def find_suppression(session: Session, email: str, keys: SuppressionKeys) -> str | None:
    """The reason `email` is suppressed (a bounce or complaint wins over ``erased``), or None.
    Erase rows found under an older key, or from before keyed hashes (plain ``erased`` rows),
    are re-hashed under the current key on the way: that is how keys rotate."""
    candidates = keys.candidates(email)
    rows = list(session.scalars(select(Suppression).where(Suppression.email_hash.in_(list(candidates)))))
    if not rows:
        return None
    reasons = {row.reason for row in rows}
    stale = [
        r
        for r in rows
        if r.hash_version not in (PLAIN, keys.current.version) or (r.hash_version == PLAIN and r.reason == "erased")
    ]
    if stale and not any(r.hash_version == keys.current.version for r in rows):
        _rekey(session, stale[0], email, keys)
        for extra in stale[1:]:
            session.delete(extra)
        session.flush()
    non_erased = sorted(reasons - {"erased"})
    return non_erased[0] if non_erased else "erased"


def _rekey(session: Session, row: Suppression, email: str, keys: SuppressionKeys) -> None:
    row.email_hash, row.hash_version = keys.keyed(email)
    row.detail = ""


def suppress_erased(session: Session, email: str, now: datetime, keys: SuppressionKeys) -> None:
    """What an erase leaves: one keyed row for the address. A bounce or complaint row already
    there keeps its reason (it must go on blocking) but is re-hashed under the key and loses its
    provider text (which often quotes the address); otherwise the row says ``erased``."""
    rows = list(session.scalars(select(Suppression).where(Suppression.email_hash.in_(list(keys.candidates(email))))))
    non_erased = sorted({r.reason for r in rows} - {"erased"})
    for row in rows:
        session.delete(row)
    session.flush()
    digest, version = keys.keyed(email)
    reason = non_erased[0] if non_erased else "erased"
    session.add(Suppression(email_hash=digest, hash_version=version, reason=reason, detail="", created_at=now))
    session.flush()


def lift_erase_suppression(session: Session, email: str, keys: SuppressionKeys) -> bool:
    """Remove the ``erased`` suppression of `email` (only a confirmed double opt-in may call
    this). False, and nothing removed, if a bounce or complaint suppresses it as well."""
    reason = find_suppression(session, email, keys)
    if reason is None:
        return True
    if reason != "erased":
        return False
    session.execute(
        delete(Suppression).where(
            Suppression.email_hash.in_(list(keys.candidates(email))), Suppression.reason == "erased"
        )
    )
    return True


def suppress(session: Session, email: str, reason: str, now: datetime, detail: str = "") -> None:
    """Add `email` to the suppression list (idempotent) and stop everything it was enrolled in."""
    key = email_hash(email)
    if session.scalar(select(Suppression.id).where(Suppression.email_hash == key)) is None:
        session.add(
            Suppression(email_hash=key, hash_version=PLAIN, reason=reason, detail=detail[:2000], created_at=now)
        )
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == email_key(email)))
    if subscriber is not None:
        if subscriber.status in ("active", "pending"):
            subscriber.status = {"complaint": "complained", "hard_bounce": "bounced"}.get(reason, "bounced")
            subscriber.updated_at = now
        end_enrollments(session, subscriber.id, now, reason)


def end_enrollments(session: Session, subscriber_id: int, now: datetime, reason: str) -> None:
    session.execute(
        update(Enrollment)
        .where(Enrollment.subscriber_id == subscriber_id, Enrollment.state == "active")
        .values(state="cancelled", next_send_at=None, ended_at=now, end_reason=reason)
    )


def unsubscribe(session: Session, subscriber: Subscriber, now: datetime, how: str) -> bool:
    """Unsubscribe at once (RFC 8058 one-click). Returns False if there was nothing to do: already
    unsubscribed, or bounced/complained (those statuses are kept: they say more)."""
    if subscriber.status not in ("active", "pending"):
        return False
    subscriber.status = "unsubscribed"
    subscriber.unsubscribed_at = now
    subscriber.updated_at = now
    end_enrollments(session, subscriber.id, now, f"unsubscribed ({how})")
    return True


@dataclass(frozen=True)
class SubscriberInput:
    email: str
    first_name: str = ""
    timezone: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()  # added to the subscriber's tags (an import never removes one)


def upsert_subscriber(
    session: Session,
    data: SubscriberInput,
    now: datetime,
    *,
    keys: SuppressionKeys,
    status: str = "active",
    source: str = "cli",
) -> Subscriber | None:
    """Create the subscriber, or update name, zone and attributes of an existing one. Never
    changes the status of someone existing (no resubscribing by import). Returns None for a
    suppressed address, erased ones included (`keys`: a staff import never brings back someone
    who asked to be erased; only their own confirmed signup does)."""
    email = normalise_email(data.email)
    if is_suppressed(session, email, keys):
        return None
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == email_key(email)))
    if subscriber is None:
        subscriber = Subscriber(
            email=email,
            email_key=email_key(email),
            first_name=data.first_name,
            timezone=data.timezone,
            attributes=dict(data.attributes),
            status=status,
            source=source,
            created_at=now,
            updated_at=now,
            confirmed_at=now if status == "active" else None,
            soft_bounces=0,
            consent={},
        )
        session.add(subscriber)
        session.flush()
        return subscriber
    subscriber.first_name = data.first_name or subscriber.first_name
    subscriber.timezone = data.timezone or subscriber.timezone
    subscriber.attributes = {**subscriber.attributes, **data.attributes}
    subscriber.updated_at = now
    return subscriber


def parse_subscriber_csv(text: str, source: str = "CSV") -> list[SubscriberInput]:
    """Parse and check a whole CSV held in memory (the demo's, a test's); raise one InputError
    listing every problem, each as ``source: line N: field: reason``. Files of any size stream
    through cadence.subscriber_import instead; both read rows with cadence.subscriber_csv."""
    from cadence.subscriber_csv import CheckedRow, read_rows

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


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    suppressed: int = 0
    unchanged: int = 0


def import_subscribers(
    session: Session, rows: Iterable[SubscriberInput], now: datetime, *, keys: SuppressionKeys
) -> ImportResult:
    """Upsert checked rows in `session`: suppressed addresses skipped, statuses never changed,
    rows with nothing new counted unchanged (cadence.subscriber_import.store_rows)."""
    from cadence.subscriber_import import store_rows

    return store_rows(session, rows, now, keys=keys)
