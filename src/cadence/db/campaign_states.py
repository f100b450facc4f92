"""The SQL of campaign states (paused, cancelled, archived) and of what they do to the ledger.

One place answers "may this campaign send now?" for every kind of campaign: a drip's tick and
send batches ask here, and so can a newsletter's (``state_of``, ``stopped_ids``). No row means
``running``: a campaign nobody touched costs nothing.

Why the shapes:

- ``stopped_ids`` is one small SELECT on a table with a row per *touched* campaign; the tick
  reads it once per round and excludes those ids from its claim, so a paused campaign's due
  enrollments keep ``next_send_at`` (their place) and nothing of it is enqueued.
- A send batch re-checks with ``halt_stopped`` every ~0.5 s of sending: one join of its own
  rows (primary keys) with this small table, so a pause reaches batches already running
  within about a second without costing a query per message.
- ``release_unsent`` puts a paused batch's remaining rows back exactly as they were queued
  (same ``not_before``, the claim's attempt given back), so a resume repeats and skips nothing.
- ``skip_queued`` and ``skip_unsent`` only touch rows nobody is sending (``queued``) or rows
  this claim holds (``sending`` + its lease token): a row another worker is sending may already
  be at the SMTP server, and marking it skipped would hide a sent email.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.orm import Session

from cadence.db import enrollment_tallies as tallies
from cadence.db import results
from cadence.db.models import CampaignState, Delivery, Enrollment, Newsletter
from cadence.db.queries import one_of
from cadence.db.transactional import TRANSACTIONAL_CAMPAIGN

RUNNING, PAUSED, CANCELLED, ARCHIVED = "running", "paused", "cancelled", "archived"
ACTIVE = "active"  # an enrollment still going through its steps
# States in which nothing of the campaign may be claimed, enqueued or sent.
STOPPED = (PAUSED, CANCELLED, ARCHIVED)
CANCEL_REASON = "campaign cancelled"


def state_of(session: Session, campaign_id: str) -> str:
    """``running`` unless staff paused, cancelled or archived the campaign."""
    row = session.get(CampaignState, campaign_id)
    return row.state if row is not None else RUNNING


def all_states(session: Session) -> dict[str, CampaignState]:
    return {row.campaign_id: row for row in session.scalars(select(CampaignState))}


def stopped_ids(session: Session | Connection) -> set[str]:
    """Ids of campaigns that may not send (paused, cancelled, archived)."""
    return set(session.scalars(select(CampaignState.campaign_id).where(CampaignState.state.in_(STOPPED))))


def set_state(session: Session, campaign_id: str, state: str, *, now: datetime, by: str, note: str = "") -> None:
    """Write the campaign's state (one row per campaign, overwritten: the history is the audit log)."""
    row = session.get(CampaignState, campaign_id)
    if row is None:
        session.add(CampaignState(campaign_id=campaign_id, state=state, changed_at=now, changed_by=by, note=note))
    else:
        row.state, row.changed_at, row.changed_by, row.note = state, now, by, note
    session.flush()


def release_unsent(conn: Connection, ids: Sequence[int], token: str) -> int:
    """Give leased, never-attempted rows back to the queue exactly as they were (paused
    campaign): not_before and last_error untouched, the claim's attempt given back."""
    if not ids:
        return 0
    result = conn.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(ids)), Delivery.state == "sending", Delivery.lease_token == token)
        .values(
            state="queued",
            enqueued_at=None,
            lease_expires_at=None,
            lease_token=None,
            attempts=func.max(Delivery.attempts - 1, 0)
            if conn.dialect.name == "sqlite"
            else func.greatest(Delivery.attempts - 1, 0),
        )
    )
    return int(result.rowcount or 0)


def skip_unsent(conn: Connection, ids: Sequence[int], token: str, reason: str, now: datetime) -> int:
    """Mark leased, never-attempted rows skipped (cancelled campaign) and end their enrollments."""
    if not ids:
        return 0
    mine = and_(Delivery.id.in_(list(ids)), Delivery.state == "sending", Delivery.lease_token == token)
    enrollment_ids = list(conn.scalars(select(Delivery.enrollment_id).where(mine)))
    result = conn.execute(
        update(Delivery).where(mine).values(state="skipped", lease_expires_at=None, last_error=reason)
    )
    _end_enrollments(conn, [i for i in enrollment_ids if i is not None], reason, now)
    return int(result.rowcount or 0)


def skip_queued(session: Session, campaign_id: str, reason: str, wall_now: datetime) -> int:
    """Cancel: every queued row of the campaign is skipped (never sent), and so is every row
    whose worker died (lease run out at `wall_now`); rows a worker is sending now are left to
    that worker, which sees the state within a second (``halt_stopped``)."""
    nobody_sending = or_(
        Delivery.state == "queued", and_(Delivery.state == "sending", Delivery.lease_expires_at < wall_now)
    )
    result = session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, nobody_sending)
        .values(state="skipped", last_error=reason, enqueued_at=None, lease_expires_at=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def end_enrollments(session: Session, campaign_id: str, reason: str, now: datetime) -> int:
    """Cancel: every active enrollment of the campaign ends (it cannot be resumed)."""
    result = session.execute(
        update(Enrollment)
        .where(Enrollment.campaign_id == campaign_id, Enrollment.state == "active")
        .values(state="cancelled", next_send_at=None, ended_at=now, end_reason=reason[:100])
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _end_enrollments(conn: Connection, ids: Sequence[int], reason: str, now: datetime) -> None:
    if ids:
        conn.execute(
            update(Enrollment)
            .where(Enrollment.id.in_(list(ids)), Enrollment.state == "active")
            .values(state="cancelled", next_send_at=None, ended_at=now, end_reason=reason[:100])
        )


def pending_work(session: Session, campaign_id: str) -> tuple[int, int]:
    """(active enrollments, deliveries queued or being sent) of a campaign: archive refuses a
    campaign that still has either."""
    active = session.scalar(
        select(func.count()).where(Enrollment.campaign_id == campaign_id, Enrollment.state == "active")
    )
    pending = session.scalar(
        select(func.count()).where(Delivery.campaign_id == campaign_id, Delivery.state.in_(("queued", "sending")))
    )
    return int(active or 0), int(pending or 0)


def campaigns_with_work(session: Session) -> set[str]:
    """Ids of drip campaigns that have active enrollments or unsent deliveries (for ``doctor``
    and the campaign list: a campaign whose file is gone is found through its rows)."""
    enrolled = select(Enrollment.campaign_id).where(Enrollment.state == "active").distinct()
    queued = (
        select(Delivery.campaign_id)
        .where(Delivery.kind == "drip", Delivery.state.in_(("queued", "sending")))
        .distinct()
    )
    return set(session.scalars(enrolled)) | set(session.scalars(queued))


def known_campaign_ids(session: Session) -> set[str]:
    """Every drip campaign id the database knows (enrollments, deliveries, states). Never a scan
    of the ledger (issue 14, 6,000,000 deliveries): enrollments by a skip scan of
    ``ix_enrollments_campaign_state``, deliveries through the results rollups and the rows not
    folded yet (db/results.campaign_ids)."""
    ids = distinct_enrollment_campaigns(session)
    # Not newsletters: their state is mirrored here for the tick (db.newsletters), and listing
    # them made `campaigns list` call a paused newsletter "held: file missing" (issue 13 trial).
    # Their ledger rows (and the transactional mail's) are not drips either.
    newsletter_ids = set(session.scalars(select(Newsletter.id)))
    ids |= results.campaign_ids(session) - newsletter_ids - {TRANSACTIONAL_CAMPAIGN}
    drips = CampaignState.campaign_id.not_in(select(Newsletter.id))
    ids |= set(session.scalars(select(CampaignState.campaign_id).where(drips)))
    return ids


def distinct_enrollment_campaigns(session: Session) -> set[str]:
    """The campaign ids of enrollments, one index probe per campaign (a "loose index scan",
    written as a recursive CTE because neither database skips through an index by itself):
    reading a million index entries to find three ids is what it replaces."""
    first = select(func.min(Enrollment.campaign_id).label("id")).cte("ids", recursive=True)
    later = select(func.min(Enrollment.campaign_id)).where(Enrollment.campaign_id > first.c.id).scalar_subquery()
    ids = first.union_all(select(later).where(first.c.id.is_not(None)))
    return {str(i) for i in session.scalars(select(ids.c.id).where(ids.c.id.is_not(None)))}


def due_campaign_ids(session: Session, now: datetime, *, excluding: Sequence[str], limit: int) -> set[str]:
    """Campaigns among the next `limit` due enrollments and the next `limit` drip deliveries
    waiting for a send task, ignoring `excluding`: what the tick is about to claim. Bounded by
    `limit` (the tick's own claim size, over the same partial indexes), so the look costs what
    one claim round costs, not a scan of every enrollment."""
    skip = list(excluding)
    due = (
        select(Enrollment.campaign_id)
        .where(Enrollment.state == "active", Enrollment.next_send_at.is_not(None), Enrollment.next_send_at <= now)
        .order_by(Enrollment.next_send_at)
        .limit(limit)
    )
    waiting = (
        select(Delivery.campaign_id)
        .where(
            Delivery.state.in_(("queued", "sending")),
            Delivery.enqueued_at.is_(None),
            Delivery.kind == "drip",
            or_(Delivery.state == "sending", Delivery.not_before <= now),
        )
        .order_by(Delivery.not_before)
        .limit(limit)
    )
    if skip:
        due = due.where(Enrollment.campaign_id.not_in(skip))
        waiting = waiting.where(Delivery.campaign_id.not_in(skip))
    return set(session.scalars(select(func.distinct(due.subquery().c.campaign_id)))) | set(
        session.scalars(select(func.distinct(waiting.subquery().c.campaign_id)))
    )


def stopped_among(conn: Connection, delivery_ids: Sequence[int]) -> dict[int, str]:
    """Of `delivery_ids`, those whose campaign is paused, cancelled or archived, with that
    state: one join on the batch's primary keys, whatever kind of campaign the rows are of."""
    if not delivery_ids:
        return {}
    rows = conn.execute(
        select(Delivery.id, CampaignState.state)
        .join(CampaignState, CampaignState.campaign_id == Delivery.campaign_id)
        .where(one_of(Delivery.id, delivery_ids, conn.dialect.name), CampaignState.state.in_(STOPPED))
    )
    return {int(i): str(s) for i, s in rows}


def halt_stopped(conn: Connection, delivery_ids: Sequence[int], token: str, now: datetime) -> tuple[set[int], set[int]]:
    """The send batch's re-check: of the rows it still holds, release those of paused campaigns
    back to the queue untouched and skip those of cancelled (or archived) ones. Returns
    (released ids, skipped ids)."""
    stopped = stopped_among(conn, delivery_ids)
    paused = [i for i, s in stopped.items() if s == PAUSED]
    cancelled = [i for i, s in stopped.items() if s != PAUSED]
    release_unsent(conn, paused, token)
    skip_unsent(conn, cancelled, token, CANCEL_REASON, now)
    return set(paused), set(cancelled)


def enrollment_summary(
    session: Session, campaign_ids: Sequence[str] | None = None
) -> dict[str, tuple[int, int, int, datetime | None]]:
    """Per campaign: (enrolled ever, active, waiting for their next email, earliest next send).
    "Waiting" is an active enrollment with its next step scheduled: enrolled (or half way)
    but not yet sent that email, what a marketer looks for right after enrolling. The counts
    are the database's own tallies (db/enrollment_tallies.py), the earliest send one index probe
    per campaign: no count of a million enrollments."""
    summary = {}
    for cid, by_state in tallies.counts(session).items():
        if campaign_ids is not None and cid not in campaign_ids:
            continue
        active = by_state.get((ACTIVE, True), 0) + by_state.get((ACTIVE, False), 0)
        waiting = by_state.get((ACTIVE, True), 0)
        first = _aware(tallies.earliest_waiting(session, cid)) if waiting else None
        summary[cid] = (sum(by_state.values()), active, waiting, first)
    return summary


def waiting_by_step(session: Session, campaign_id: str) -> dict[int, tuple[int, datetime | None]]:
    """Per next step: (active enrollments scheduled for it, the earliest of them)."""
    rows = session.execute(
        select(Enrollment.next_step, func.count(), func.min(Enrollment.next_send_at))
        .where(
            Enrollment.campaign_id == campaign_id, Enrollment.state == "active", Enrollment.next_send_at.is_not(None)
        )
        .group_by(Enrollment.next_step)
    )
    return {int(step): (int(n), _aware(first)) for step, n, first in rows}


def postponed_by_step(
    session: Session, now: datetime, campaign_ids: Sequence[str] | None = None
) -> dict[str, dict[int, tuple[int, datetime | None]]]:
    """Per campaign and step: (drip emails postponed, the earliest time one goes out). Postponed:
    queued for a later time without a failed attempt, which the send path does to a step that
    came due outside its send window or during a subscriber's pause (drip_policy.postpone_until).
    Its enrollment has no next send meanwhile; without this, status showed such a person as
    waiting for nothing ("next: none scheduled", cold trial). Written as the predicate of
    ``ix_deliveries_unqueued``: its cost follows the rows waiting for a send task."""
    query = (
        select(Delivery.campaign_id, Delivery.step_index, func.count(), func.min(Delivery.not_before))
        .where(
            Delivery.state == "queued",
            Delivery.enqueued_at.is_(None),
            Delivery.not_before > now,
            Delivery.attempts == 0,
            Delivery.kind == "drip",
        )
        .group_by(Delivery.campaign_id, Delivery.step_index)
    )
    if campaign_ids is not None:
        query = query.where(Delivery.campaign_id.in_(list(campaign_ids)))
    found: dict[str, dict[int, tuple[int, datetime | None]]] = {}
    for cid, step, n, first in session.execute(query):
        found.setdefault(str(cid), {})[int(step)] = (int(n), _aware(first))
    return found


def delivery_counts(session: Session) -> dict[str, dict[str, int]]:
    """Per campaign: deliveries by state (``sending`` counted as queued), from the results
    rollups and the rows not folded yet (db/results.state_counts: exact, no ledger scan). Every
    kind is there; a drip's id has only drip rows."""
    return {cid: dict(counts) for cid, counts in results.state_counts(session).items()}


def _aware(value: datetime | None) -> datetime | None:
    """An aggregate (min) comes back without the column's type on some drivers: naive UTC."""
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return value
    if isinstance(value, str):  # SQLite returns aggregates of DATETIME columns as text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)
