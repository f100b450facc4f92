"""Use cases of the drip engine as plain functions: enroll, tick, deliver, record_event.

The Celery tasks, the CLI and the demo all call these; none of them holds logic of its own.
The flow (see docs and ../shared/ARCHITECTURE.md):

    enroll  → enrollment.next_send_at (pure schedule math)
    tick    → claim due enrollments, insert ledger rows (UNIQUE enrollment+step), return ids
    deliver → lease the ledger rows, re-check the subscriber *now*, render, build, send,
              record each result, advance the enrollment

Guarantee: a (subscriber, step) is sent at most once, except when a worker dies after the
server accepted a message and before the ``sent`` row committed; that window is one group of
messages per sending thread of the worker (``cadence worker`` sends 4 batches at once by
default; each group is at most ``CADENCE_COMMIT_EVERY``, default 20, and about 0.1 s of
sending: see ``sending.GROUP_SECONDS``), and the duplicate carries the same Message-ID as the
first copy. A database restart mid-send re-sends nothing: the worker keeps its batch's results
and writes them once the database answers again (batch_ledger.py).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from cadence.clock import wall_now
from cadence.core import drip_policy
from cadence.core.campaign import Campaign
from cadence.core.schedule import subscriber_zone
from cadence.core.segments import choose_segment
from cadence.db import enrollments, queries
from cadence.db.models import Enrollment, Event, Subscriber
from cadence.db.session import transaction
from cadence.errors import NotFound
from cadence.monitoring import metrics
from cadence.operations.delivery import prepare_and_send
from cadence.operations.holds import held_campaigns
from cadence.operations.runtime import Runtime
from cadence.operations.send_results import SendOutcome

__all__ = [
    "EnrollResult",
    "TickResult",
    "deliver",
    "enroll",
    "enroll_active",
    "find_subscriber",
    "record_event",
    "tick",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- enroll


@dataclass
class EnrollResult:
    enrolled: int = 0
    resumed: int = 0
    already: int = 0
    not_active: int = 0


def enroll(session: Session, campaign: Campaign, subscribers: Sequence[Subscriber], now: datetime) -> EnrollResult:
    """Put active subscribers into `campaign`; the first step is scheduled by the pure schedule
    module in each subscriber's own time zone. Enrolling twice is a no-op; a subscriber whose
    enrollment was cancelled (they unsubscribed) and who is active again (they confirmed a new
    signup) resumes the series where it stopped."""
    result = EnrollResult()
    ids = [s.id for s in subscribers]
    existing = enrollments.enrollments_of(session, campaign.id, ids)
    for subscriber in subscribers:
        if subscriber.status != "active":
            result.not_active += 1
            continue
        tz = subscriber_zone(subscriber.timezone, campaign)
        enrollment = existing.get(subscriber.id)
        if enrollment is not None:
            _enrolled_before(session, enrollment, campaign, now=now, tz=tz, result=result)
            continue
        session.add(
            Enrollment(
                subscriber_id=subscriber.id,
                campaign_id=campaign.id,
                state="active",
                next_step=0,
                enrolled_at=now,
                next_send_at=drip_policy.first_step_due(campaign, enrolled_at=now, tz=tz),
                end_reason="",
            )
        )
        result.enrolled += 1
    session.flush()
    return result


def enroll_active(
    session: Session, campaign: Campaign, now: datetime, *, segment: str | None = None, page_size: int = 5000
) -> EnrollResult:
    """Enroll every active subscriber (only those in `segment` now, if given: their answers
    today, as the send path chooses) with the same outcome per subscriber as :func:`enroll`,
    a page of `page_size` subscribers at a time: a few statements per page and no ORM object
    per subscriber, so memory stays flat whatever the list's size (bench/scale.py; loading the
    whole list as objects took 215 MB and 8 s for 20,000 subscribers, growing linearly)."""
    result = EnrollResult()
    today = now.date()
    first_due: dict[ZoneInfo, datetime | None] = {}  # the first step's time depends on the zone only
    for page in enrollments.active_subscriber_pages(session, page_size):
        if segment is not None:
            page = [p for p in page if choose_segment(campaign.segments, p.attributes, today).id == segment]
        existing = enrollments.enrollments_of(session, campaign.id, [p.id for p in page])
        new: list[tuple[int, datetime | None]] = []
        for subscriber in page:
            tz = subscriber_zone(subscriber.timezone, campaign)
            enrollment = existing.get(subscriber.id)
            if enrollment is not None:
                _enrolled_before(session, enrollment, campaign, now=now, tz=tz, result=result)
                continue
            if tz not in first_due:
                first_due[tz] = drip_policy.first_step_due(campaign, enrolled_at=now, tz=tz)
            new.append((subscriber.id, first_due[tz]))
        inserted = enrollments.insert_enrollments(session, campaign.id, new, now)
        result.enrolled += inserted
        result.already += len(new) - inserted  # enrolled meanwhile (a signup confirmed)
        session.flush()  # the resumed ones; flushed objects are dropped from the session's weak map
    return result


def _enrolled_before(
    session: Session, enrollment: Enrollment, campaign: Campaign, *, now: datetime, tz: ZoneInfo, result: EnrollResult
) -> None:
    """A subscriber who has an enrollment in `campaign` already: it resumes if it was cancelled
    (they unsubscribed and are active again), otherwise it is left alone."""
    if drip_policy.may_resume(enrollment.state, enrollment.next_step, len(campaign.steps)):
        _resume(session, enrollment, campaign, now=now, tz=tz)
        result.resumed += 1
    else:
        result.already += 1


def _resume(session: Session, enrollment: Enrollment, campaign: Campaign, *, now: datetime, tz: ZoneInfo) -> None:
    """Make a cancelled enrollment active again at its next step, doing what
    ``drip_policy.resume_action`` says for the ledger row that step may already have (the
    delivery failed or skipped when the enrollment ended, or one still in flight; issue 13)."""
    step_count = len(campaign.steps)
    due = drip_policy.resume_due(campaign, enrollment.next_step, now=now, tz=tz)
    enrollment.state, enrollment.ended_at, enrollment.end_reason = "active", None, ""
    delivery = enrollments.step_delivery(session, enrollment.id, enrollment.next_step)
    action = drip_policy.resume_action(
        delivery.state if delivery is not None else None, enrollment.next_step, step_count
    )
    if action == "schedule" or delivery is None:
        enrollment.next_send_at = due
        return
    enrollment.next_send_at = None  # in flight: the row below is the step's one delivery
    if action == "requeue":
        delivery.last_error = f"queued again when the enrollment resumed (was {delivery.state}: {delivery.last_error})"
        delivery.state, delivery.attempts = "queued", 0
        delivery.due_at = delivery.not_before = due
        delivery.enqueued_at = delivery.lease_expires_at = delivery.lease_token = None
    elif action == "advance":  # the step went out after all: go on with the one after it,
        # timed from when that step actually went out (drip_policy.resume_after_sent_step)
        following = drip_policy.resume_after_sent_step(
            campaign,
            enrollment.next_step,
            enrolled_at=enrollment.enrolled_at,
            sent_at=delivery.sent_at or now,
            now=now,
            tz=tz,
        )
        enrollment.next_step, enrollment.next_send_at = following.index, following.due_at
    elif action == "complete":
        enrollment.next_step += 1
        enrollment.state, enrollment.ended_at, enrollment.end_reason = "completed", delivery.sent_at, ""
    # "wait": that delivery sends the step (re-checked at send time)


# ---------------------------------------------------------------------------- tick


@dataclass
class TickResult:
    claimed: int = 0
    batches: list[list[int]] = field(default_factory=list)
    locked_out: bool = False
    held: dict[str, str] = field(default_factory=dict)  # campaign id -> why its work was left waiting

    @property
    def enqueued(self) -> int:
        return sum(len(batch) for batch in self.batches)


def tick(
    runtime: Runtime,
    *,
    now: datetime | None = None,
    claim_limit: int = 5000,
    max_rounds: int = 20,
    enqueue: Callable[[list[int]], None] | None = None,
) -> TickResult:
    """Claim due enrollments into ledger rows and collect deliveries that need a send task.

    Works in rounds of `claim_limit` rows, each its own transaction. After each round commits,
    its delivery ids are handed to `enqueue` in batches of ``settings.batch_size`` (a task must
    never see an uncommitted row, and workers should start on the first round while the next is
    claimed). All batches are also returned in the result.
    """
    settings = runtime.settings
    now = now or runtime.clock.now()
    result = TickResult()
    requeue_after = drip_policy.requeue_lost_tasks_after(timedelta(seconds=settings.lease_seconds))
    for _ in range(max_rounds):
        with transaction(settings.database_url) as session:
            if not queries.try_tick_lock(session):
                result.locked_out = True
                return result
            # Paused, cancelled, or a missing/broken file: their work stays where it is (issue 13).
            result.held = held_campaigns(session, runtime.catalog, now, limit=claim_limit)
            held = sorted(result.held)
            stamp = wall_now()
            one_statement = queries.claim_and_create_ledger_rows(session, now, stamp, claim_limit, excluding=held)
            if one_statement is not None:
                claimed, ids = one_statement
            else:
                due = queries.claim_due_enrollments(session, now, claim_limit, excluding=held)
                queries.create_ledger_rows(session, due, now)
                claimed, ids = len(due), []
            result.claimed += claimed
            # Retries that came due, rows of lost tasks or dead workers (and, on SQLite, the
            # rows just created).
            more = queries.deliveries_to_enqueue(session, now, stamp, requeue_after, claim_limit, excluding=held)
            ids += more
        size = settings.batch_size
        for i in range(0, len(ids), size):
            result.batches.append(ids[i : i + size])
            if enqueue is not None:
                enqueue(ids[i : i + size])
        if claimed < claim_limit and len(more) < claim_limit:
            break
    metrics.count_tick(result.claimed, result.enqueued)
    return result


# ---------------------------------------------------------------------------- deliver


def deliver(runtime: Runtime, delivery_ids: Sequence[int]) -> SendOutcome:
    """Send the given deliveries (a Celery task's payload). Safe to call twice with the same
    ids: only rows this call leases are sent."""
    settings = runtime.settings
    now = runtime.clock.now()
    token = secrets.token_hex(8)  # this claim's identity: every later ledger update checks it
    with transaction(settings.database_url) as session:
        # Every claim counts an attempt, the re-claim of a dead worker's row too. A row whose
        # worker stopped on it max_attempts times (a poison row) is claimed to be given up.
        abandoned = queries.abandoned_among(session, delivery_ids, wall_now(), settings.max_attempts)
        claimed = queries.claim_deliveries(
            session, delivery_ids, now, wall_now(), timedelta(seconds=settings.lease_seconds), token
        )
    if not claimed:
        return SendOutcome()
    given_up = {i: n for i, n in abandoned.items() if i in set(claimed)}
    outcome = prepare_and_send(runtime, claimed, now, token=token, abandoned=given_up)
    metrics.count_sends(outcome, settings.email_url)
    log.info(
        "batch of %d: %d sent, %d retrying, %d failed, %d skipped, %d postponed",
        *(len(claimed), outcome.sent, outcome.retrying, outcome.failed, outcome.skipped, outcome.postponed),
        extra={"delivery_ids": list(claimed)},
    )
    return outcome


# ---------------------------------------------------------------------------- events


def record_event(
    session: Session,
    subscriber: Subscriber,
    kind: str,
    now: datetime,
    *,
    catalog_campaigns: Sequence[Campaign] = (),
    delivery_id: int | None = None,
    data: dict[str, object] | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Store an event; if it is an exit goal of a campaign the subscriber is in, end that
    enrollment (no further steps). Returns False if `dedupe_key` was seen before."""
    if dedupe_key and enrollments.event_key_seen(session, dedupe_key):
        return False
    session.add(
        Event(
            subscriber_id=subscriber.id,
            delivery_id=delivery_id,
            kind=kind,
            data=data or {},
            dedupe_key=dedupe_key,
            created_at=now,
        )
    )
    goal_campaigns = [c.id for c in catalog_campaigns if kind in c.exit_goals]
    if goal_campaigns:
        for enrollment in enrollments.active_enrollments_in(session, subscriber.id, goal_campaigns):
            enrollment.state = "exited"
            enrollment.next_send_at = None
            enrollment.ended_at = now
            enrollment.end_reason = f"goal: {kind}"
    session.flush()
    return True


def find_subscriber(session: Session, email: str) -> Subscriber:
    from cadence.core.subscriber_fields import email_key

    subscriber = enrollments.subscriber_by_email_key(session, email_key(email))
    if subscriber is None:
        raise NotFound(f"no subscriber {email!r}")
    return subscriber
