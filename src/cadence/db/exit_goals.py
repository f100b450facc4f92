"""The SQL of ending drips when their exit goal is met, at the moment a tag or an answer changes
(operations/exit_goals.py decides which; core/drip_policy.exit_goal_reached is the rule).

Set-based for imports: one read of the candidates per chunk of subscribers (their active
enrollments in campaigns that have a goal, joined to the subscriber's answers) and one read of
their tags; then a handful of statements for all the enrollments that end, whatever their
number. What they leave is what the send path leaves when it finds the goal met at send time
(operations/delivery.py, db/send_batch.record_goal_reached), so `cadence report`, the staff API
and the console count a goal once, whichever check saw it first:

- the step not sent is a ``skipped`` ledger row with the goal reason: the queued row if the tick
  had made one, else a new row for the enrollment's next step (UNIQUE (enrollment, step): a row
  a racing tick made wins, and is skipped by the UPDATE or by the worker's own re-check);
- one ``exit_goal`` event, on the last email sent to them, or on that skipped row when they met
  the goal before the first email;
- the enrollment ``exited`` with the reason "goal reached".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Enrollment, Event, Subscriber
from cadence.db.queries import one_of
from cadence.db.send_batch import GOAL_EVENT

__all__ = ["Candidate", "GoalEnd", "candidates", "end_enrollments"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An active enrollment of an active subscriber in a campaign with an exit goal."""

    enrollment_id: int
    subscriber_id: int
    campaign_id: str
    next_step: int
    attributes: dict[str, Any]
    timezone: str | None


@dataclass(frozen=True, slots=True)
class GoalEnd:
    """An enrollment whose goal is met: `step_index` (`step_id`) is the step it will not send."""

    enrollment_id: int
    subscriber_id: int
    campaign_id: str
    step_index: int
    step_id: str


def candidates(session: Session, subscriber_ids: Sequence[int], campaign_ids: Sequence[str]) -> list[Candidate]:
    """The active enrollments of `subscriber_ids` in `campaign_ids`, locked (PostgreSQL) so the
    tick, which claims with SKIP LOCKED, cannot queue their next step meanwhile."""
    if not subscriber_ids or not campaign_ids:
        return []
    dialect = session.get_bind().dialect.name
    query = (
        select(
            Enrollment.id,
            Enrollment.subscriber_id,
            Enrollment.campaign_id,
            Enrollment.next_step,
            Subscriber.attributes,
            Subscriber.timezone,
        )
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(
            one_of(Enrollment.subscriber_id, sorted(set(subscriber_ids)), dialect),
            Enrollment.campaign_id.in_(list(campaign_ids)),
            Enrollment.state == "active",
            Subscriber.status == "active",
        )
        .order_by(Enrollment.id)  # one lock order for every writer
        .with_for_update(of=Enrollment)
    )
    return [Candidate(e, s, c, n, dict(a or {}), tz) for e, s, c, n, a, tz in session.execute(query)]


def end_enrollments(
    session: Session, ends: Sequence[GoalEnd], now: datetime, *, skip_reason: str, state: str, end_reason: str
) -> int:
    """End `ends` as goal reached (see the module docstring); returns the enrollments ended."""
    if not ends:
        return 0
    dialect = session.get_bind().dialect.name
    ids = [end.enrollment_id for end in ends]
    # The step waiting for a worker is never sent; a row being sent right now is left to the
    # worker, which re-checks the enrollment before each group (queries.no_longer_sendable).
    session.execute(
        update(Delivery)
        .where(one_of(Delivery.enrollment_id, ids, dialect), Delivery.state == "queued")
        .values(state="skipped", last_error=skip_reason, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    rows = [
        {
            "enrollment_id": end.enrollment_id,
            "subscriber_id": end.subscriber_id,
            "campaign_id": end.campaign_id,
            "step_id": end.step_id,
            "step_index": end.step_index,
            "segment_id": "",
            "kind": "drip",
            "state": "skipped",
            "attempts": 0,
            "due_at": now,
            "not_before": now,
            "message_id": "",
            "content_hash": "",
            "last_error": skip_reason,
            "created_at": now,
        }
        for end in ends
    ]
    # executemany of one compiled statement (the driver batches it): a multi-row VALUES of a
    # thousand rows cost SQLAlchemy ~0.5 s to compile per chunk (bench/import_goals.py).
    conn = session.connection()
    conn.execute(insert(Delivery).on_conflict_do_nothing(index_elements=["enrollment_id", "step_index"]), rows)
    # The event's row: the last email sent, else the step not sent (as record_goal_reached).
    last_sent: dict[int, tuple[int, int]] = {}
    at_step: dict[tuple[int, int], int] = {}
    query = select(Delivery.enrollment_id, Delivery.step_index, Delivery.id, Delivery.state).where(
        one_of(Delivery.enrollment_id, ids, dialect)
    )
    for enrollment_id, step_index, delivery_id, row_state in session.execute(query):
        assert enrollment_id is not None  # selected by enrollment
        at_step[(enrollment_id, step_index)] = delivery_id
        if row_state == "sent" and step_index >= last_sent.get(enrollment_id, (-1, 0))[0]:
            last_sent[enrollment_id] = (step_index, delivery_id)
    events = [
        {
            "subscriber_id": end.subscriber_id,
            "delivery_id": (
                last_sent[end.enrollment_id][1]
                if end.enrollment_id in last_sent
                else at_step[(end.enrollment_id, end.step_index)]
            ),
            "kind": GOAL_EVENT,
            "data": {"campaign": end.campaign_id, "before_step": end.step_id},
            "created_at": now,
        }
        for end in ends
    ]
    conn.execute(insert(Event), events)
    done = session.execute(
        update(Enrollment)
        .where(one_of(Enrollment.id, ids, dialect), Enrollment.state == "active")
        .values(state=state, next_send_at=None, ended_at=now, end_reason=end_reason[:100])
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]
