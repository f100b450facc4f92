"""The reads behind enrolling, resuming and exit goals (operations/enrollment.py decides; these fetch).

Why they look like this: each reads a handful of rows through an index (UNIQUE (subscriber_id,
campaign_id), UNIQUE (enrollment_id, step_index), UNIQUE dedupe_key, UNIQUE email_key), so the
ORM's objects are fine here: the callers change them in place and the session writes them. The
exception is enrolling a whole list (``campaigns enroll --all``): pages of plain rows in, one
INSERT per page out. The hot paths (the tick's claim, the send batch) have their own set-based
SQL (queries.py, send_batch.py, ledger.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Enrollment, Event, Subscriber

__all__ = [
    "active_enrollments_in",
    "active_subscriber_pages",
    "enrollments_of",
    "event_key_seen",
    "insert_enrollments",
    "step_delivery",
    "subscriber_by_email_key",
]


def enrollments_of(session: Session, campaign_id: str, subscriber_ids: Sequence[int]) -> dict[int, Enrollment]:
    """The existing enrollments of `subscriber_ids` in `campaign_id`, by subscriber id."""
    query = select(Enrollment).where(
        Enrollment.campaign_id == campaign_id, Enrollment.subscriber_id.in_(list(subscriber_ids))
    )
    return {e.subscriber_id: e for e in session.scalars(query)}


def step_delivery(session: Session, enrollment_id: int, step_index: int) -> Delivery | None:
    """The ledger row of one step of one enrollment, if the tick made it (there is at most one)."""
    return session.scalar(
        select(Delivery).where(Delivery.enrollment_id == enrollment_id, Delivery.step_index == step_index)
    )


def event_key_seen(session: Session, dedupe_key: str) -> bool:
    """Whether an event with this provider key was stored already (a webhook delivered twice)."""
    return session.scalar(select(Event.id).where(Event.dedupe_key == dedupe_key)) is not None


def active_enrollments_in(session: Session, subscriber_id: int, campaign_ids: Sequence[str]) -> list[Enrollment]:
    """The subscriber's active enrollments in `campaign_ids` (those an exit goal ends)."""
    query = select(Enrollment).where(
        Enrollment.subscriber_id == subscriber_id,
        Enrollment.campaign_id.in_(list(campaign_ids)),
        Enrollment.state == "active",
    )
    return list(session.scalars(query))


def subscriber_by_email_key(session: Session, key: str) -> Subscriber | None:
    """The subscriber whose lowercased address is `key`."""
    return session.scalar(select(Subscriber).where(Subscriber.email_key == key))


@dataclass(frozen=True)
class ActiveSubscriber:
    """What enrolling needs of a subscriber: the zone times the first step, the answers choose
    the segment."""

    id: int
    timezone: str | None
    attributes: dict[str, Any]


def active_subscriber_pages(session: Session, page_size: int = 5000) -> Iterator[list[ActiveSubscriber]]:
    """Every active subscriber, a page at a time in id order (keyset: ``id > last`` on the
    primary key, so each page costs the same however far into the list it is). Plain rows,
    not ORM objects: ``campaigns enroll --all`` used to hold every subscriber and its new
    enrollment as objects (215 MB for 20,000, growing linearly; bench/scale.py)."""
    last = 0
    while True:
        rows = session.execute(
            select(Subscriber.id, Subscriber.timezone, Subscriber.attributes)
            .where(Subscriber.status == "active", Subscriber.id > last)
            .order_by(Subscriber.id)
            .limit(page_size)
        ).all()
        if not rows:
            return
        yield [ActiveSubscriber(id_, tz, dict(attrs or {})) for id_, tz, attrs in rows]
        last = rows[-1][0]


_ENROLLMENTS: Table = Enrollment.__table__  # type: ignore[assignment]  # Core statements: no ORM bookkeeping

# One statement per page: two arrays unnested into rows. An executemany or a VALUES list costs
# a parameter set per row to build and convert (SQLAlchemy + psycopg spent more time on that
# than PostgreSQL spent inserting; see db/imports.py for the same lesson with COPY).
_INSERT_PG = text(
    """
    INSERT INTO enrollments (subscriber_id, campaign_id, state, next_step, next_send_at, enrolled_at, end_reason)
    SELECT t.subscriber_id, :campaign_id, 'active', 0, t.due, :enrolled_at, ''
    FROM unnest(CAST(:ids AS bigint[]), CAST(:dues AS timestamp[])) AS t(subscriber_id, due)
    ON CONFLICT (subscriber_id, campaign_id) DO NOTHING
    """
)


def insert_enrollments(
    session: Session, campaign_id: str, rows: Sequence[tuple[int, datetime | None]], enrolled_at: datetime
) -> int:
    """New active enrollments at the first step, (subscriber id, first step due) each. A
    subscriber enrolled meanwhile (a signup confirmed between the read and this insert) keeps
    the enrollment they have: ON CONFLICT DO NOTHING. Returns the rows inserted."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        result = session.execute(
            _INSERT_PG,
            {
                "campaign_id": campaign_id,
                "enrolled_at": _naive_utc(enrolled_at),
                "ids": [subscriber_id for subscriber_id, _ in rows],
                "dues": [_naive_utc(due) if due is not None else None for _, due in rows],
            },
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
    statement = sqlite_insert(_ENROLLMENTS).on_conflict_do_nothing(index_elements=["subscriber_id", "campaign_id"])
    values = [
        {"subscriber_id": subscriber_id, "campaign_id": campaign_id, "state": "active", "next_step": 0,
         "next_send_at": due, "enrolled_at": enrolled_at, "end_reason": ""}
        for subscriber_id, due in rows
    ]  # fmt: skip
    # SQLite: an executemany is in-process, no round trips; its rowcount leaves out conflicts.
    return int(session.execute(statement, values).rowcount)  # type: ignore[attr-defined]


def _naive_utc(value: datetime) -> datetime:
    # How models.UTCDateTime stores an instant (the text statement bypasses the column type).
    return value.astimezone(UTC).replace(tzinfo=None)
