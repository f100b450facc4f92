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

The predicates "due" (``not_before <= now``, the business clock) and "lease expired"
(``lease_expires_at < wall_now``, real time) are the SQL side of the drip policy
(core/drip_policy.py), which decides every other timing rule; they stay here because the
database must apply them in the same statement that claims the rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    String,
    and_,
    any_,
    bindparam,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import QueryableAttribute, Session

from cadence.core.suppression_keys import plain_hash
from cadence.db.models import Delivery, Enrollment, Link, Subscriber, Suppression, UTCDateTime


class Pending(Protocol):
    """A delivery about to be sent (``ledger.PreparedSend`` is one): what the re-check reads.
    A protocol, so db/ need not import the send path above it."""

    @property
    def delivery_id(self) -> int: ...

    @property
    def subscriber_email(self) -> str: ...


# pg_try_advisory_xact_lock key: "cadence tick". One scheduler at a time; released at commit.
_TICK_LOCK_KEY = 0x63616465


def one_of(column: QueryableAttribute[Any], values: Sequence[Any], dialect: str) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``: one parameter whatever the
    batch size, so SQLAlchemy need not expand (and re-render) a hundred parameters per batch,
    and the statement text is the same every time."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def try_tick_lock(session: Session) -> bool:
    """Take the cluster-wide tick lock for this transaction (PostgreSQL); always True on SQLite,
    where BEGIN IMMEDIATE already serialises the whole transaction."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _TICK_LOCK_KEY}).scalar())


def claim_due_enrollments(session: Session, now: datetime, limit: int, *, excluding: Sequence[str] = ()) -> list[int]:
    """Ids of active enrollments whose next step is due, oldest first, locked for this
    transaction. Only ids: hydrating ORM objects cost more than the rest of the claim.
    `excluding`: campaigns that are held (paused, cancelled, file missing): their enrollments
    keep their place (next_send_at) until the campaign may send again."""
    query = (
        select(Enrollment.id)
        .where(Enrollment.state == "active", Enrollment.next_send_at.is_not(None), Enrollment.next_send_at <= now)
        .order_by(Enrollment.next_send_at)
        .limit(limit)
    )
    if excluding:
        query = query.where(Enrollment.campaign_id.not_in(list(excluding)))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def create_ledger_rows(session: Session, enrollment_ids: Sequence[int], now: datetime) -> None:
    """One ``queued`` delivery per claimed enrollment for its next step, built by the database
    (INSERT ... SELECT: no rows travel through Python, and the statement has as many bind
    parameters as ids, far below PostgreSQL's 65,535), then mark the enrollments in flight.

    ON CONFLICT DO NOTHING: if a row for (enrollment, step) exists, a racing tick made it; the
    UNIQUE key turns the race into a no-op instead of a second email."""
    if not enrollment_ids:
        return
    ids = list(enrollment_ids)
    source = select(
        Enrollment.id,
        Enrollment.subscriber_id,
        Enrollment.campaign_id,
        literal(""),
        Enrollment.next_step,
        literal(""),
        literal("queued"),
        literal(0),
        Enrollment.next_send_at,
        Enrollment.next_send_at,
        literal(""),
        literal(""),
        literal(""),
        literal(now, UTCDateTime()),
    ).where(Enrollment.id.in_(ids))
    columns = [
        "enrollment_id", "subscriber_id", "campaign_id", "step_id", "step_index", "segment_id", "state",
        "attempts", "due_at", "not_before", "message_id", "content_hash", "last_error", "created_at",
    ]  # fmt: skip
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Delivery).from_select(columns, source)
    session.execute(statement.on_conflict_do_nothing(index_elements=["enrollment_id", "step_index"]))
    session.execute(update(Enrollment).where(Enrollment.id.in_(ids)).values(next_send_at=None))


# PostgreSQL: claim due enrollments, create their ledger rows already stamped as enqueued, and
# take the enrollments out of the due index, in ONE statement. Nothing travels through Python
# but the new delivery ids. The three-statement form (claim ids, INSERT ... SELECT with an IN
# list, then SELECT ... FOR UPDATE + UPDATE enqueued_at on the new rows) spent ~60 µs per due
# row (bench/tick_cost.py), mostly in the second pass over every new row.
_CLAIM_AND_CREATE_PG = text(
    """
    WITH due AS (
        SELECT id FROM enrollments
        WHERE state = 'active' AND next_send_at IS NOT NULL AND next_send_at <= :now
          AND NOT (campaign_id = ANY(:held))
        ORDER BY next_send_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), created AS (
        INSERT INTO deliveries (
            enrollment_id, subscriber_id, campaign_id, step_id, step_index, segment_id, state,
            attempts, due_at, not_before, enqueued_at, message_id, content_hash, last_error, created_at
        )
        SELECT e.id, e.subscriber_id, e.campaign_id, '', e.next_step, '', 'queued',
               0, e.next_send_at, e.next_send_at, :wall_now, '', '', '', :now
        FROM enrollments e JOIN due ON due.id = e.id
        ON CONFLICT (enrollment_id, step_index) DO NOTHING
        RETURNING id, not_before
    ), moved AS (
        UPDATE enrollments SET next_send_at = NULL WHERE id IN (SELECT id FROM due)
    )
    SELECT (SELECT count(*) FROM due) AS claimed,
           coalesce((SELECT array_agg(id ORDER BY not_before, id) FROM created), '{}') AS created
    """
).bindparams(
    bindparam("now", type_=UTCDateTime()),
    bindparam("wall_now", type_=UTCDateTime()),
    bindparam("held", type_=ARRAY(String())),
)


def claim_and_create_ledger_rows(
    session: Session, now: datetime, wall_now: datetime, limit: int, *, excluding: Sequence[str] = ()
) -> tuple[int, list[int]] | None:
    """On PostgreSQL: ``claim_due_enrollments`` + ``create_ledger_rows`` in one statement, the
    new rows stamped enqueued at `wall_now` (the caller enqueues them after commit). Returns
    (enrollments claimed, new delivery ids), or None on other databases (use the two calls)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    claimed, created = session.execute(
        _CLAIM_AND_CREATE_PG, {"now": now, "wall_now": wall_now, "limit": limit, "held": list(excluding)}
    ).one()
    return int(claimed), list(created)


def deliveries_to_enqueue(
    session: Session,
    now: datetime,
    wall_now: datetime,
    requeue_after: timedelta,
    limit: int,
    *,
    excluding: Sequence[str] = (),
) -> list[int]:
    """Ids of deliveries that need a send task: queued and due, never enqueued or enqueued so
    long ago that the task must have been lost; or ``sending`` with an expired lease (the
    worker died mid-batch). Marks them enqueued now."""
    stale = wall_now - requeue_after
    # Queued and due, or sending with an expired lease (its worker died) ...
    needs_work = or_(
        and_(Delivery.state == "queued", Delivery.not_before <= now),
        and_(Delivery.state == "sending", Delivery.lease_expires_at < wall_now),
    )
    pending = Delivery.state.in_(("queued", "sending"))
    # ... and never enqueued, or enqueued so long ago that the task must be lost (a dead worker's
    # rows: once per lease period, not on every tick while they wait in a backlog). Written as
    # the predicates of ix_deliveries_unqueued and ix_deliveries_enqueued, so each arm is an
    # index scan of the few rows that match.
    condition = or_(
        and_(pending, Delivery.enqueued_at.is_(None), needs_work),
        and_(pending, Delivery.enqueued_at.is_not(None), Delivery.enqueued_at < stale, needs_work),
    )
    query = select(Delivery.id).where(condition).order_by(Delivery.not_before).limit(limit)
    if excluding:  # held campaigns: their rows stay queued, not attempted
        query = query.where(Delivery.campaign_id.not_in(list(excluding)))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(enqueued_at=wall_now))
    return ids


def claim_deliveries(
    session: Session, ids: Sequence[int], now: datetime, wall_now: datetime, lease: timedelta, token: str
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
        .where(one_of(Delivery.id, ids, session.get_bind().dialect.name), claimable)
        .values(state="sending", lease_expires_at=wall_now + lease, lease_token=token, attempts=Delivery.attempts + 1)
        .returning(Delivery.id)
    )
    return sorted(row[0] for row in result)


def abandoned_among(session: Session, ids: Sequence[int], wall_now: datetime, max_attempts: int) -> dict[int, int]:
    """Of `ids`, the deliveries whose worker stopped while sending them ``max_attempts`` times:
    ``sending`` with an expired lease (nobody holds them) after that many claims, each of which
    counted an attempt. Their attempts, by id. Read in the claim's transaction, before
    ``claim_deliveries``: the caller gives these up instead of sending them again (a poison row
    must not take its batch down forever); a single kill (a deploy) is only one attempt."""
    if not ids:
        return {}
    rows = session.execute(
        select(Delivery.id, Delivery.attempts).where(
            one_of(Delivery.id, ids, session.get_bind().dialect.name),
            Delivery.state == "sending",
            Delivery.lease_expires_at < wall_now,
            Delivery.attempts >= max_attempts,
        )
    )
    return {int(i): int(n) for i, n in rows}


def release_after_error(
    conn: Connection,
    ids: Sequence[int],
    token: str,
    wall_now: datetime,
    error: str,
    *,
    retry_at: Callable[[int], datetime | None],
) -> None:
    """Let go of leased deliveries this worker did not send because our own code raised. Each
    keeps the attempt its claim counted and goes back to the queue until ``retry_at(attempts)``
    (business time: drip_policy.retry_at, the backoff of a refused email), so a fault that hits
    every email (a bug, a broken DKIM key) spends its retries over hours, not one per tick, and
    leaves time to fix it. A row whose attempts are used up (``retry_at`` gives None) is let go
    as a dead worker's row instead: its lease ends now, and the next claim gives it up
    (``abandoned_among``; its series goes on)."""
    if not ids:
        return
    dialect = conn.dialect.name
    mine = (one_of(Delivery.id, ids, dialect), Delivery.state == "sending", Delivery.lease_token == token)
    by_time: dict[datetime | None, list[int]] = {}
    for delivery_id, attempts in conn.execute(select(Delivery.id, Delivery.attempts).where(*mine)):
        by_time.setdefault(retry_at(attempts), []).append(delivery_id)
    detail = f"worker error: {error}"[:2000]
    for not_before, group in by_time.items():
        which = (one_of(Delivery.id, group, dialect), *mine[1:])
        if not_before is None:
            conn.execute(
                update(Delivery).where(*which).values(lease_expires_at=wall_now, enqueued_at=None, last_error=detail)
            )
        else:
            conn.execute(
                update(Delivery)
                .where(*which)
                .values(
                    state="queued", not_before=not_before, enqueued_at=None, lease_expires_at=None, last_error=detail
                )
            )


def give_up(conn: Connection, ids: Sequence[int], token: str, error: str) -> None:
    """Mark leased deliveries failed for good (no enrollment to move on: transactional emails
    and newsletter copies; drip steps are given up by the send path, which moves the series on)."""
    if ids:
        conn.execute(
            update(Delivery)
            .where(
                one_of(Delivery.id, ids, conn.dialect.name), Delivery.state == "sending", Delivery.lease_token == token
            )
            .values(state="failed", lease_expires_at=None, last_error=error[:2000])
        )


def renew_lease_on(conn: Connection, ids: Sequence[int], until: datetime, token: str) -> None:
    """Extend the lease on deliveries this worker (this claim's `token`) is still sending."""
    if ids:
        conn.execute(
            update(Delivery)
            .where(
                one_of(Delivery.id, ids, conn.dialect.name), Delivery.state == "sending", Delivery.lease_token == token
            )
            .values(lease_expires_at=until)
        )


def store_links(session: Session, urls: Sequence[str]) -> dict[str, int]:
    """Ids of click-tracking destinations, inserting the new ones.

    INSERT ... ON CONFLICT DO NOTHING, then SELECT: two workers storing the links of a new step
    at the same moment both succeed (a SELECT-then-INSERT raced into a unique violation and
    left the whole batch leased until its lease expired; found by bench/send_throughput.py)."""
    by_hash = {hashlib.sha256(u.encode()).hexdigest(): u for u in urls}
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(Link)
        # In one order (by hash) for every caller: two sending threads storing overlapping sets
        # of new links in different orders could otherwise deadlock on PostgreSQL.
        .values([{"url": by_hash[h], "url_hash": h} for h in sorted(by_hash)])
        .on_conflict_do_nothing(index_elements=["url_hash"])
    )
    rows = session.execute(select(Link.url_hash, Link.id).where(Link.url_hash.in_(list(by_hash))))
    return {by_hash[digest]: link_id for digest, link_id in rows}


def requeue_unsent(conn: Connection, ids: Sequence[int], not_before: datetime, error: str, token: str) -> None:
    """Put leased deliveries that were never attempted back in the queue, giving back the
    attempt their claim counted (an outage of the server must not use up retries)."""
    if ids:
        conn.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(ids)), Delivery.state == "sending", Delivery.lease_token == token)
            .values(
                state="queued",
                not_before=not_before,
                enqueued_at=None,
                lease_expires_at=None,
                attempts=Delivery.attempts - 1,
                last_error=f"not attempted: {error}"[:2000],
            )
        )


def no_longer_sendable(conn: Connection, prepared: Sequence[Pending], token: str) -> set[int]:
    """Of the deliveries about to be sent, those this worker must not send any more: whose
    subscriber is no longer active, whose address is now suppressed or whose enrollment ended
    (marked skipped), and those whose lease another worker took over (left alone).

    A transactional email (no enrollment) goes to people who are not active yet (a confirmation
    is for a pending address): only a bounce, a complaint or a suppression stops it."""
    if not prepared:
        return set()
    ids = [p.delivery_id for p in prepared]
    still_mine = set(
        conn.scalars(
            select(Delivery.id).where(
                one_of(Delivery.id, ids, conn.dialect.name), Delivery.state == "sending", Delivery.lease_token == token
            )
        )
    )
    lost = set(ids) - still_mine
    gone = set(
        conn.scalars(
            select(Delivery.id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .outerjoin(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .where(
                one_of(Delivery.id, sorted(still_mine), conn.dialect.name),
                or_(
                    Subscriber.status.in_(("bounced", "complained")),
                    and_(
                        Delivery.kind != "transactional",
                        or_(Subscriber.status != "active", Enrollment.state != "active"),
                    ),
                ),
            )
        )
    )
    hashes = {plain_hash(p.subscriber_email): p.delivery_id for p in prepared if p.delivery_id in still_mine}
    for digest in conn.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(list(hashes)))):
        gone.add(hashes[digest])
    if gone:
        conn.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(gone)), Delivery.state == "sending", Delivery.lease_token == token)
            .values(state="skipped", lease_expires_at=None, last_error="unsubscribed or suppressed during the batch")
        )
    return gone | lost


def still_leased(conn: Connection, ids: Sequence[int], token: str) -> set[int]:
    """Of `ids`, the deliveries still ``sending`` under this claim's `token`: after a lost
    connection, the ones whose recorded results the database does not have (issue #9)."""
    if not ids:
        return set()
    return set(
        conn.scalars(
            select(Delivery.id).where(
                Delivery.id.in_(list(ids)), Delivery.state == "sending", Delivery.lease_token == token
            )
        )
    )
