"""Subscriber use cases: add, import, unsubscribe, suppress. Plain functions over a Session.

A suppressed address (bounced, complained, erased) receives nothing from any path, and a
re-import never brings back someone who unsubscribed: imports only add or update attributes.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cadence.core.message import check_header_text, validate_addr_spec
from cadence.db.models import Enrollment, Subscriber, Suppression
from cadence.errors import InputError

_CONTROL = {"\r", "\n", "\x00"}


def email_key(email: str) -> str:
    return email.strip().lower()


def email_hash(email: str) -> str:
    """What a suppression stores: SHA-256 of the lowercased address (no readable trace)."""
    return hashlib.sha256(email_key(email).encode()).hexdigest()


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


def check_text(value: str, field_name: str, limit: int = 200) -> str:
    if any(ch in value for ch in _CONTROL):
        raise InputError(f"{field_name}: contains a line break or NUL")
    check_header_text(field_name, value)  # names end up in To: headers
    if len(value) > limit:
        raise InputError(f"{field_name}: longer than {limit} characters")
    return value.strip()


def is_suppressed(session: Session, email: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash(email))) is not None


def suppress(session: Session, email: str, reason: str, now: datetime, detail: str = "") -> None:
    """Add `email` to the suppression list (idempotent) and stop everything it was enrolled in."""
    key = email_hash(email)
    if session.scalar(select(Suppression.id).where(Suppression.email_hash == key)) is None:
        session.add(Suppression(email_hash=key, reason=reason, detail=detail[:2000], created_at=now))
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


def upsert_subscriber(
    session: Session, data: SubscriberInput, now: datetime, *, status: str = "active", source: str = "cli"
) -> Subscriber | None:
    """Create the subscriber, or update name, zone and attributes of an existing one. Never
    changes the status of someone existing (no resubscribing by import). Returns None for a
    suppressed address."""
    email = normalise_email(data.email)
    if is_suppressed(session, email):
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


def import_subscribers(session: Session, rows: Iterable[SubscriberInput], now: datetime) -> ImportResult:
    """Upsert checked rows in `session`: suppressed addresses skipped, statuses never changed,
    rows with nothing new counted unchanged (cadence.subscriber_import.store_rows)."""
    from cadence.subscriber_import import store_rows

    return store_rows(session, rows, now)
