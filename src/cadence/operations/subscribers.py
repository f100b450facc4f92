"""Subscriber use cases: add, import, unsubscribe, suppress. Plain functions over a Session; the
SQL is in db/suppressions.py, the checks of each field in core/subscriber_fields.py.

A suppressed address (bounced, complained, erased) receives nothing from any path, and a
re-import never brings back someone who unsubscribed: imports only add or update attributes.

Erased addresses are suppressed by a keyed hash (cadence.core.suppression_keys), so every door that
must refuse them (imports, staff adds, signups) passes the :class:`SuppressionKeys`. Only a
confirmed double opt-in lifts an erase suppression (operations/signup.py); a bounce or complaint
suppression is never lifted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.core.subscriber_fields import SubscriberInput, email_hash, email_key, normalise_email
from cadence.core.suppression_keys import PLAIN, SuppressionKeys
from cadence.db import suppressions
from cadence.db.enrollments import subscriber_by_email_key
from cadence.db.models import Subscriber, Suppression
from cadence.operations.exit_goals import end_reached_goals

__all__ = [
    "ImportResult",
    "end_enrollments",
    "find_suppression",
    "import_subscribers",
    "is_suppressed",
    "lift_erase_suppression",
    "suppress",
    "suppress_erased",
    "unsubscribe",
    "upsert_subscriber",
]


def is_suppressed(session: Session, email: str, keys: SuppressionKeys | None = None) -> bool:
    """Whether `email` is suppressed. Without `keys`, only plain rows count (enough for people
    on the list: an erased person has no row to send to); every door that adds people passes
    `keys` so erased addresses are refused too."""
    if keys is None:
        return suppressions.has_row(session, email_hash(email))
    return find_suppression(session, email, keys) is not None


def find_suppression(session: Session, email: str, keys: SuppressionKeys) -> str | None:
    """The reason `email` is suppressed (a bounce or complaint wins over ``erased``), or None.
    Erase rows found under an older key, or from before keyed hashes (plain ``erased`` rows),
    are re-hashed under the current key on the way: that is how keys rotate."""
    candidates = keys.candidates(email)
    rows = suppressions.rows_for(session, candidates)
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
    rows = suppressions.rows_for(session, keys.candidates(email))
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
    suppressions.delete_erased(session, keys.candidates(email))
    return True


def suppress(session: Session, email: str, reason: str, now: datetime, detail: str = "") -> None:
    """Add `email` to the suppression list (idempotent) and stop everything it was enrolled in."""
    key = email_hash(email)
    if not suppressions.has_row(session, key):
        session.add(
            Suppression(email_hash=key, hash_version=PLAIN, reason=reason, detail=detail[:2000], created_at=now)
        )
    subscriber = subscriber_by_email_key(session, email_key(email))
    if subscriber is not None:
        if subscriber.status in ("active", "pending"):
            subscriber.status = {"complaint": "complained", "hard_bounce": "bounced"}.get(reason, "bounced")
            subscriber.updated_at = now
        end_enrollments(session, subscriber.id, now, reason)


def end_enrollments(session: Session, subscriber_id: int, now: datetime, reason: str) -> None:
    """Cancel every active enrollment of the subscriber (`reason` is kept on each)."""
    suppressions.end_active_enrollments(session, subscriber_id, now, reason)


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


def upsert_subscriber(
    session: Session,
    data: SubscriberInput,
    now: datetime,
    *,
    keys: SuppressionKeys,
    status: str = "active",
    source: str = "cli",
    goals: Sequence[Campaign] = (),
) -> Subscriber | None:
    """Create the subscriber, or update name, zone and attributes of an existing one. Never
    changes the status of someone existing (no resubscribing by import). Returns None for a
    suppressed address, erased ones included (`keys`: a staff import never brings back someone
    who asked to be erased; only their own confirmed signup does)."""
    email = normalise_email(data.email)
    if is_suppressed(session, email, keys):
        return None
    subscriber = subscriber_by_email_key(session, email_key(email))
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
    before = subscriber.attributes
    subscriber.attributes = {**subscriber.attributes, **data.attributes}
    subscriber.updated_at = now
    if subscriber.attributes != before:  # new answers may meet an exit goal (`goals`)
        session.flush()
        end_reached_goals(session, goals, [subscriber.id], now, answers_changed=True)
    return subscriber


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
    rows with nothing new counted unchanged (cadence.operations.subscriber_import.store_rows)."""
    from cadence.operations.subscriber_import import store_rows

    return store_rows(session, rows, now, keys=keys)
