"""The queries whose shape matters: claiming due work without double-claiming it.

Why they look like this:

- ``claim_due_enrollments`` selects due rows ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
  ticks running at once (a second scheduler started by mistake) each take different rows and
  neither waits for the other. SQLite has no row locks; there our engine opens every
  transaction with ``BEGIN IMMEDIATE``, which serialises writers, so the second tick sees the
  first one's work. Either way the UNIQUE (enrollment_id, step_index) key on deliveries is the
  last line of defence: a step can never get two ledger rows.
- ``claim_deliveries`` is one conditional UPDATE ... RETURNING: a delivery moves from
  ``queued`` (or from ``sending`` with an expired lease, i.e. its worker died) to ``sending``
  atomically, so the same send task delivered twice by the broker finds nothing to claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Enrollment

# pg_try_advisory_xact_lock key: "cadence tick". One scheduler at a time; released at commit.
_TICK_LOCK_KEY = 0x63616465


def try_tick_lock(session: Session) -> bool:
    """Take the cluster-wide tick lock for this transaction (PostgreSQL); always True on SQLite,
    where BEGIN IMMEDIATE already serialises the whole transaction."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _TICK_LOCK_KEY}).scalar())


def claim_due_enrollments(session: Session, now: datetime, limit: int) -> list[Enrollment]:
    """Active enrollments whose next step is due, oldest first, locked for this transaction."""
    query = (
        select(Enrollment)
        .where(Enrollment.state == "active", Enrollment.next_send_at.is_not(None), Enrollment.next_send_at <= now)
        .order_by(Enrollment.next_send_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def deliveries_to_enqueue(
    session: Session, now: datetime, wall_now: datetime, requeue_after: timedelta, limit: int
) -> list[int]:
    """Ids of deliveries that need a send task: queued and due, never enqueued or enqueued so
    long ago that the task must have been lost; or ``sending`` with an expired lease (the
    worker died mid-batch). Marks them enqueued now."""
    stale = wall_now - requeue_after
    condition = or_(
        and_(
            Delivery.state == "queued",
            Delivery.not_before <= now,
            or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < stale),
        ),
        and_(Delivery.state == "sending", Delivery.lease_expires_at < wall_now),
    )
    query = select(Delivery.id).where(condition).order_by(Delivery.not_before).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(enqueued_at=wall_now))
    return ids


def claim_deliveries(
    session: Session, ids: Sequence[int], now: datetime, wall_now: datetime, lease: timedelta
) -> list[int]:
    """Atomically lease the claimable deliveries among `ids`; returns the ids this caller got."""
    if not ids:
        return []
    claimable = or_(
        and_(Delivery.state == "queued", Delivery.not_before <= now),
        and_(Delivery.state == "sending", Delivery.lease_expires_at < wall_now),
    )
    result = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(ids)), claimable)
        .values(state="sending", lease_expires_at=wall_now + lease, attempts=Delivery.attempts + 1)
        .returning(Delivery.id)
    )
    return sorted(row[0] for row in result)


def renew_lease(session: Session, ids: Sequence[int], until: datetime) -> None:
    """Extend the lease on deliveries this worker is still sending."""
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(ids)), Delivery.state == "sending")
            .values(lease_expires_at=until)
        )
