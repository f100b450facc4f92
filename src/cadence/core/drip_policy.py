"""Drip policy: every decision about *when* (and whether) a drip step goes out, as pure functions.

This is the one answer to "where is drip timing decided?" (issue 12). ``core/schedule.py`` does
the calendar math (delays, send windows, time zones); this module decides with it. The adapters
(``enrollment.enroll``, ``delivery``, ``send_results``, ``batch_ledger``) read rows, ask here, and write the
answer; they hold no timing rule of their own. Every instant is an argument: ``now`` is the
business clock (fixed once per batch), ``wall_now`` the real time (leases are about processes,
not about the schedule: ``clock.wall_now``).

The rules, in the order a delivery meets them:

==========================  ==================================================================
enroll                      :func:`first_step_due`: the first step's delay from enrollment,
                            moved into the send window in the subscriber's zone
resume (re-enroll)          :func:`may_resume`, :func:`resume_due`, :func:`resume_action`
goal met (at once)          :func:`exit_goal_touched` (can this tag or answer change meet it?),
                            :func:`exit_goal_reached`; ``operations/exit_goals`` ends the drip
skip (never send)           :func:`skip_reason` (:func:`exit_goal_reached` among its reasons),
                            then :func:`enrollment_end_after_skip`
postpone (not yet)          :func:`postpone_until`: paused, or past the window grace
next step                   :func:`next_step_after`: counted from this send (or enrollment)
retry (transient failure)   :func:`retry_at`: exponential backoff with full jitter, at least the
                            server's Retry-After, until ``max_attempts``
failed step                 :func:`series_goes_on_after_failure`
outage (nothing went out)   :func:`outage_retry_at`: no attempt counted
lost task                   :func:`requeue_lost_tasks_after`
worker stopped mid-send     every claim counts an attempt; :func:`worker_stops_error`
                            after ``max_attempts`` (a kill, a crash of our own code)
lease (wall time)           :func:`lease_renewal_due`, :func:`lease_safe_until`
database reconnect          :data:`FIRST_RECONNECT_DELAY`, :func:`next_reconnect_delay`
==========================  ==================================================================

The claim predicates in ``db/queries.py`` (``not_before <= now`` for a queued row,
``lease_expires_at < wall_now`` for a dead worker's row) are the SQL form of "due" and "lease
expired"; they stay SQL because the database must apply them atomically.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cadence.core.campaign import Campaign, ExitGoal, SendWindow
from cadence.core.schedule import next_send_at, step_due_at
from cadence.core.segments import rule_matches

__all__ = [
    "FIRST_RECONNECT_DELAY",
    "GOAL_REACHED",
    "MAX_RECONNECT_DELAY",
    "OUTAGE_BACKOFF",
    "WINDOW_GRACE",
    "NextStep",
    "ResumeAction",
    "enrollment_end_after_skip",
    "exit_goal_reached",
    "exit_goal_touched",
    "first_step_due",
    "lease_renewal_due",
    "lease_safe_until",
    "may_resume",
    "next_reconnect_delay",
    "next_step_after",
    "outage_retry_at",
    "postpone_until",
    "requeue_lost_tasks_after",
    "resume_action",
    "resume_after_sent_step",
    "resume_due",
    "retry_at",
    "retry_backoff",
    "series_goes_on_after_failure",
    "skip_reason",
    "worker_stops_error",
]

# A delivery claimed inside its window may still go out this long after the window closed
# (a worker backlog); later than that it waits for the next window.
WINDOW_GRACE = timedelta(hours=1)
# Retry a batch whose transport was unreachable after this long (an outage costs no attempts).
OUTAGE_BACKOFF = timedelta(minutes=2)
# Reconnect to a lost database after 0.25 s, then twice as long each time, at most 5 s apart: a
# PostgreSQL restart takes one to a few seconds, and a worker retrying every few seconds costs
# the server nothing (issue #9).
FIRST_RECONNECT_DELAY = 0.25
MAX_RECONNECT_DELAY = 5.0
# The skip reason (and, as "goal reached", the enrollment's end reason) of a step not sent
# because the subscriber reached the campaign's exit goal (issue 13 item 6).
GOAL_REACHED = "exit goal reached"


# ---------------------------------------------------------------------------- enroll and resume


def first_step_due(campaign: Campaign, *, enrolled_at: datetime, tz: ZoneInfo) -> datetime:
    """When the first step of a new enrollment goes out."""
    return step_due_at(campaign, 0, enrolled_at=enrolled_at, previous_sent_at=None, tz=tz)


def may_resume(enrollment_state: str, next_step: int, step_count: int) -> bool:
    """Whether enrolling again resumes an existing enrollment: only one that was cancelled (the
    subscriber unsubscribed and signed up again) with steps left. Any other existing enrollment
    makes enrolling a no-op."""
    return enrollment_state == "cancelled" and next_step < step_count


def resume_due(campaign: Campaign, next_step: int, *, now: datetime, tz: ZoneInfo) -> datetime:
    """When the step a resumed enrollment stopped at goes out: its delay counts from the
    resumption, as if the subscriber had enrolled now (the previous send is too long ago to
    count from)."""
    return step_due_at(campaign, next_step, enrolled_at=now, previous_sent_at=None, tz=tz)


def resume_after_sent_step(
    campaign: Campaign, sent_step: int, *, enrolled_at: datetime, sent_at: datetime, now: datetime, tz: ZoneInfo
) -> NextStep:
    """The ``advance`` case of :func:`resume_action`: step `sent_step` went out at `sent_at`
    although the enrollment had ended, and it resumes at `now`. The next step's delay counts from
    that actual send (as :func:`next_step_after` does for any sent step), not from the
    resumption: counting the sent step's own delay again would leave a gap the series never
    had. A due time already past (the send was long ago) becomes the first window from `now`:
    nothing is sent for a time before the person came back."""
    following = next_step_after(campaign, sent_step, enrolled_at=enrolled_at, sent_at=sent_at, tz=tz)
    if following.due_at is None or following.due_at >= now:
        return following
    return NextStep(following.index, next_send_at(now, campaign.send_window, tz))


ResumeAction = Literal["schedule", "requeue", "advance", "complete", "wait"]


def resume_action(delivery_state: str | None, next_step: int, step_count: int) -> ResumeAction:
    """What resuming an enrollment does, given the state of the ledger row for its next step
    (None: there is none). A tick never makes a second row for a step (UNIQUE enrollment+step),
    so scheduling the enrollment while a row exists would leave it waiting for ever (issue 13):

    - ``schedule``: no row; the enrollment is due at :func:`resume_due`;
    - ``requeue``: the row was failed or skipped when the enrollment ended; it is queued again
      (the step was never sent, so sending it now is still at most once);
    - ``advance`` / ``complete``: the step went out after all; go on with the one after it, or
      complete the series if it was the last;
    - ``wait``: the row is queued or being sent; it sends the step (re-checked at send time).
    """
    if delivery_state is None:
        return "schedule"
    if delivery_state in ("failed", "skipped"):
        return "requeue"
    if delivery_state == "sent":
        return "advance" if next_step + 1 < step_count else "complete"
    return "wait"


# ---------------------------------------------------------------------------- at send time


def exit_goal_reached(goal: ExitGoal | None, attributes: Mapping[str, Any], tags: Collection[str], today: date) -> bool:
    """Whether a subscriber with these `attributes` and staff `tags` has reached `goal` (None:
    the campaign has none). Tags compare case-insensitively, as staff type them; rules read
    attributes exactly as segment rules do (``core/segments.rule_matches``), on the send date."""
    if goal is None:
        return False
    have = {tag.lower() for tag in tags}
    results = [tag.lower() in have for tag in goal.tags]
    results += [rule_matches(rule, attributes, today) for rule in goal.rules]
    if not results:
        return False
    return any(results) if goal.match == "any" else all(results)


def exit_goal_touched(
    goal: ExitGoal | None, *, tags_added: Collection[str] = (), answers_changed: bool = False
) -> bool:
    """Whether a change can have made `goal` newly reached: a tag it names was added, or answers
    changed and it has rules. Anything else leaves it as it was, so the subscribers a change
    touched need no look at that campaign (an import tagging 10,000 people ``vip`` reads no
    enrollment of a drip whose goal is ``booked``)."""
    if goal is None:
        return False
    added = {tag.lower() for tag in tags_added}
    return bool(added & {tag.lower() for tag in goal.tags}) or (answers_changed and bool(goal.rules))


def skip_reason(
    *,
    subscriber_status: str,
    suppressed: bool,
    enrollment_state: str,
    step_index: int,
    step_count: int,
    goal_reached: bool = False,
) -> str:
    """Why a leased delivery must not be sent at all, or "" if it may be. Checked at send time,
    not at enqueue time (ARCHITECTURE.md): an unsubscribe after the tick is honoured, and so is
    a booking (`goal_reached`, from :func:`exit_goal_reached`) recorded after the last email."""
    if subscriber_status != "active":
        return f"subscriber is {subscriber_status}"
    if suppressed:
        return "address is suppressed"
    if enrollment_state != "active":
        return f"enrollment is {enrollment_state}"
    if step_index >= step_count:
        return "step no longer exists in the campaign"
    if goal_reached:
        return GOAL_REACHED
    return ""


def enrollment_end_after_skip(step_index: int, step_count: int, reason: str) -> tuple[str, str]:
    """(state, end reason) of the enrollment of a skipped delivery. It never stays active with
    nothing scheduled (it would wait for ever): completed if the campaign lost the step,
    exited when the subscriber reached the exit goal (the drip did its job), cancelled
    otherwise."""
    if step_index >= step_count:
        return "completed", "the campaign has fewer steps now"
    if reason == GOAL_REACHED:
        return "exited", "goal reached"
    return "cancelled", reason


def postpone_until(
    *, now: datetime, due_at: datetime, paused_until: datetime | None, window: SendWindow, tz: ZoneInfo
) -> datetime | None:
    """When a delivery that may be sent must wait instead, or None to send it now.

    A paused subscriber waits for the first window after the pause. A delivery more than
    :data:`WINDOW_GRACE` late (a worker backlog, an outage) waits for the next window rather
    than arriving at night; within the grace it goes out even just after the window closed.
    """
    if paused_until is not None and paused_until > now:
        return next_send_at(paused_until, window, tz)
    if now > due_at + WINDOW_GRACE:
        in_window = next_send_at(now, window, tz)
        if in_window > now:
            return in_window
    return None


@dataclass(frozen=True, slots=True)
class NextStep:
    """The enrollment after a step was sent (or given up): its next step and when it is due;
    ``due_at`` None means the series is complete."""

    index: int
    due_at: datetime | None


def next_step_after(
    campaign: Campaign, step_index: int, *, enrolled_at: datetime, sent_at: datetime, tz: ZoneInfo
) -> NextStep:
    """The next step once step `step_index` went out (or was given up) at `sent_at`. Its delay
    counts from that send, or from enrollment for ``after: enrollment`` steps
    (``schedule.step_due_at``)."""
    index = step_index + 1
    if index >= len(campaign.steps):
        return NextStep(index, None)
    return NextStep(index, step_due_at(campaign, index, enrolled_at=enrolled_at, previous_sent_at=sent_at, tz=tz))


# ---------------------------------------------------------------------------- after a failure


def retry_backoff(
    attempt: int, *, base: float = 60.0, cap: float = 6 * 3600.0, rng: random.Random | None = None
) -> timedelta:
    """Delay before retry number `attempt` (1-based): exponential with full jitter.

    "Full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter") spreads retries of
    many deliveries that failed together, so a recovering server is not hit by a thundering herd.
    Never less than half the exponential step, so a retry is not immediate.
    """
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    r = (rng or random).random()
    return timedelta(seconds=ceiling / 2 + r * ceiling / 2)


def retry_at(
    now: datetime,
    attempts: int,
    *,
    max_attempts: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> datetime | None:
    """When a delivery refused for now (a 4xx, a timeout) is tried again, or None when its
    `attempts` are used up and it fails. Never sooner than the server's Retry-After
    (RFC 9110 §10.2.3) when it gave one."""
    if attempts >= max_attempts:
        return None
    wait = retry_backoff(attempts, rng=rng)
    if retry_after:
        wait = max(wait, timedelta(seconds=retry_after))
    return now + wait


def series_goes_on_after_failure(status: str) -> bool:
    """Whether a failed step moves the enrollment on to its next step. A permanent refusal of
    the address (a 5xx for the recipient) suppresses it, which ends every drip (issue #4); any
    other failure (the message or our sender refused, retries used up) loses this step only:
    nothing says the address is bad."""
    return status != "permanent"


def outage_retry_at(now: datetime) -> datetime:
    """When a batch that could not reach its transport at all is tried again. Its deliveries
    were never attempted, so the outage costs them no attempt."""
    return now + OUTAGE_BACKOFF


def worker_stops_error(stops: int) -> str:
    """The ``last_error`` of a delivery given up because the worker stopped every time it was
    sending it (a poison row: a bug or a signer fault on its values, or a worker killed each
    time). Only after ``max_attempts`` claims (``db/queries.abandoned_among``): a worker killed
    by a deploy costs the rows it held one attempt, not the email. The step is lost, the series
    goes on (:func:`series_goes_on_after_failure` of a non-permanent failure)."""
    return f"gave up: the worker stopped {stops} times while sending this"


# ---------------------------------------------------------------------------- leases (wall time)


def requeue_lost_tasks_after(lease: timedelta) -> timedelta:
    """How long after a delivery was enqueued the tick presumes its send task lost (a worker
    died, the broker dropped it) and enqueues it again: one lease, so a backlog is not enqueued
    again on every tick."""
    return lease


def lease_renewal_due(granted_at: datetime, lease: timedelta, wall_now: datetime) -> bool:
    """Whether a batch still sending renews its lease: at half-life, so a slow server cannot
    make another worker take over rows that are still being sent."""
    return wall_now >= granted_at + lease / 2


def lease_safe_until(grants: Sequence[datetime], lease: timedelta) -> datetime:
    """Until when no other worker can take a batch over, given when its lease was granted (the
    claim, then each renewal). The latest renewal may have been lost with a crashed server (an
    asynchronous commit), the one before it not: renewals are half a lease apart, far more than
    the ~0.6 s a crash can forget. A tenth of the lease is kept in hand for the time between the
    claim and the batch, and for clock skew."""
    granted = grants[-2] if len(grants) > 1 else grants[0]
    return granted + lease * 0.9


def next_reconnect_delay(delay: float) -> float:
    """The wait before the next attempt to reach a lost database, after waiting `delay`."""
    return min(delay * 2, MAX_RECONNECT_DELAY)
