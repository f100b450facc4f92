"""Drip policy: every timing rule of a drip, as tables of (situation, answer)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from cadence.core import drip_policy
from cadence.core.campaign import Campaign, Segment, SendWindow, Step

NY = ZoneInfo("America/New_York")
MORNING = SendWindow(time(7), time(9), frozenset(range(6)))  # Mon-Sat 07:00-09:00 local


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


CAMPAIGN = Campaign(
    id="c",
    name="C",
    sender_name="S",
    sender_email="s@example.com",
    timezone="America/New_York",
    segments=(Segment("all", "All", fallback=True),),
    steps=(
        Step("welcome", "w", timedelta(0)),
        Step("day-2", "d2", timedelta(days=2)),
        Step("week-2", "w2", timedelta(days=14), after="enrollment"),
    ),
    send_window=MORNING,
)
TUESDAY_0730 = utc(2026, 12, 1, 12, 30)  # Tue 1 Dec 2026 07:30 in New York: inside the window
TUESDAY_1500 = utc(2026, 12, 1, 20, 0)  # 15:00 local: after the window


# ---------------------------------------------------------------------------- enroll and resume


@pytest.mark.parametrize(
    ("enrolled_at", "expected"),
    [
        (TUESDAY_0730, TUESDAY_0730),  # inside the window: at once
        (TUESDAY_1500, utc(2026, 12, 2, 12, 0)),  # after it: next morning 07:00 local
        (utc(2026, 12, 5, 20, 0), utc(2026, 12, 7, 12, 0)),  # Saturday evening: Sunday is closed
    ],
)
def test_the_first_step_is_due_in_the_first_window_after_enrollment(enrolled_at: datetime, expected: datetime) -> None:
    assert drip_policy.first_step_due(CAMPAIGN, enrolled_at=enrolled_at, tz=NY) == expected


@pytest.mark.parametrize(
    ("state", "next_step", "resumes"),
    [
        ("cancelled", 1, True),  # unsubscribed mid-series, signed up again
        ("cancelled", 3, False),  # nothing left to send
        ("active", 1, False),  # enrolling twice is a no-op
        ("completed", 3, False),
        ("exited", 1, False),  # reached a goal: a new signup does not restart the series
    ],
)
def test_only_a_cancelled_enrollment_with_steps_left_resumes(state: str, next_step: int, resumes: bool) -> None:
    assert drip_policy.may_resume(state, next_step, len(CAMPAIGN.steps)) is resumes


def test_a_resumed_step_counts_its_delay_from_the_resumption() -> None:
    assert drip_policy.resume_due(CAMPAIGN, 1, now=TUESDAY_0730, tz=NY) == TUESDAY_0730 + timedelta(days=2)


@pytest.mark.parametrize(
    ("delivery_state", "next_step", "action"),
    [
        (None, 1, "schedule"),
        ("failed", 1, "requeue"),
        ("skipped", 1, "requeue"),
        ("sent", 1, "advance"),
        ("sent", 2, "complete"),  # the last step went out after all
        ("queued", 1, "wait"),
        ("sending", 1, "wait"),
    ],
)
def test_resuming_does_what_the_steps_ledger_row_calls_for(
    delivery_state: str | None, next_step: int, action: str
) -> None:
    assert drip_policy.resume_action(delivery_state, next_step, len(CAMPAIGN.steps)) == action


@pytest.mark.parametrize(
    ("sent_step", "sent_at", "now", "expected"),
    [
        # Step 0 went out Tuesday 07:30 although the enrollment had ended; back an hour later:
        # step 1 (2 days after the previous send) keeps Thursday 07:30, not two days from now.
        (0, TUESDAY_0730, TUESDAY_0730 + timedelta(hours=1), (1, TUESDAY_0730 + timedelta(days=2))),
        # Back the next afternoon: still timed from the send, not from the resumption.
        (0, TUESDAY_0730, utc(2026, 12, 2, 20, 0), (1, TUESDAY_0730 + timedelta(days=2))),
        # Back three weeks later: Thursday is long gone, so the first window from now (the
        # resumption is Tuesday 22 Dec 15:00 local: Wednesday 07:00), never a time in the past.
        (0, TUESDAY_0730, utc(2026, 12, 22, 20, 0), (1, utc(2026, 12, 23, 12, 0))),
        # Step 1 went out; step 2 is "14 days after enrollment": its due time ignores the send.
        (1, utc(2026, 12, 3, 12, 30), utc(2026, 12, 4, 12, 0), (2, TUESDAY_0730 + timedelta(days=14))),
        # The last step went out: nothing is due (the enrollment completes).
        (2, utc(2026, 12, 15, 12, 30), utc(2026, 12, 16, 12, 0), (3, None)),
    ],
)
def test_resuming_after_the_step_went_out_times_the_next_one_from_that_send(
    sent_step: int, sent_at: datetime, now: datetime, expected: tuple[int, datetime | None]
) -> None:
    following = drip_policy.resume_after_sent_step(
        CAMPAIGN, sent_step, enrolled_at=TUESDAY_0730, sent_at=sent_at, now=now, tz=NY
    )
    assert (following.index, following.due_at) == expected


# ---------------------------------------------------------------------------- at send time


@pytest.mark.parametrize(
    ("subscriber_status", "suppressed", "enrollment_state", "step_index", "reason"),
    [
        ("active", False, "active", 0, ""),
        ("unsubscribed", False, "active", 0, "subscriber is unsubscribed"),
        ("unsubscribed", True, "cancelled", 9, "subscriber is unsubscribed"),  # the first reason wins
        ("active", True, "active", 0, "address is suppressed"),
        ("active", False, "exited", 0, "enrollment is exited"),
        ("active", False, "active", 3, "step no longer exists in the campaign"),
    ],
)
def test_skip_reasons_at_send_time(
    subscriber_status: str, suppressed: bool, enrollment_state: str, step_index: int, reason: str
) -> None:
    got = drip_policy.skip_reason(
        subscriber_status=subscriber_status,
        suppressed=suppressed,
        enrollment_state=enrollment_state,
        step_index=step_index,
        step_count=len(CAMPAIGN.steps),
    )
    assert got == reason


@pytest.mark.parametrize(
    ("step_index", "expected"),
    [
        (1, ("cancelled", "subscriber is paused")),
        (3, ("completed", "the campaign has fewer steps now")),
    ],
)
def test_a_skipped_delivery_never_leaves_its_enrollment_waiting(step_index: int, expected: tuple[str, str]) -> None:
    assert drip_policy.enrollment_end_after_skip(step_index, 3, "subscriber is paused") == expected


@pytest.mark.parametrize(
    ("now", "due_at", "paused_until", "expected"),
    [
        # due and inside the window: now
        (TUESDAY_0730, TUESDAY_0730, None, None),
        # a pause that ended: now
        (TUESDAY_0730, TUESDAY_0730, TUESDAY_0730 - timedelta(days=1), None),
        # paused: the first window after the pause (pause ends Thu 15:00 local, window Fri 07:00)
        (TUESDAY_0730, TUESDAY_0730, utc(2026, 12, 3, 20, 0), utc(2026, 12, 4, 12, 0)),
        # 50 minutes late, just after the window closed: within the grace, sent now
        (utc(2026, 12, 1, 14, 20), utc(2026, 12, 1, 13, 30), None, None),
        # more than the grace late and outside the window: next morning
        (utc(2026, 12, 1, 16, 0), utc(2026, 12, 1, 13, 30), None, utc(2026, 12, 2, 12, 0)),
        # more than the grace late but inside the window: now
        (utc(2026, 12, 2, 12, 30), TUESDAY_0730, None, None),
    ],
)
def test_postponing(now: datetime, due_at: datetime, paused_until: datetime | None, expected: datetime | None) -> None:
    got = drip_policy.postpone_until(now=now, due_at=due_at, paused_until=paused_until, window=MORNING, tz=NY)
    assert got == expected


@pytest.mark.parametrize(
    ("step_index", "sent_at", "expected"),
    [
        (0, TUESDAY_0730, drip_policy.NextStep(1, TUESDAY_0730 + timedelta(days=2))),
        # a late send pushes the next step back (its delay counts from the send) ...
        (
            0,
            TUESDAY_0730 + timedelta(minutes=20),
            drip_policy.NextStep(1, TUESDAY_0730 + timedelta(days=2, minutes=20)),
        ),
        # ... but not a step counted from enrollment (14 days after Tue 07:30 is Tue 07:30)
        (1, utc(2026, 12, 3, 12, 30), drip_policy.NextStep(2, TUESDAY_0730 + timedelta(days=14))),
        (2, TUESDAY_0730 + timedelta(days=14), drip_policy.NextStep(3, None)),  # the last: complete
    ],
)
def test_the_next_step(step_index: int, sent_at: datetime, expected: drip_policy.NextStep) -> None:
    got = drip_policy.next_step_after(CAMPAIGN, step_index, enrolled_at=TUESDAY_0730, sent_at=sent_at, tz=NY)
    assert got == expected


# ---------------------------------------------------------------------------- after a failure


def test_retry_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [drip_policy.retry_backoff(n, rng=rng).total_seconds() for n in range(1, 12)]
    assert 30 <= delays[0] <= 60
    assert 60 <= delays[1] <= 120
    assert all(d <= 6 * 3600 for d in delays)
    assert delays[-1] >= 3 * 3600


@pytest.mark.parametrize(
    ("attempts", "retry_after", "earliest", "latest"),
    [
        (1, None, timedelta(seconds=30), timedelta(seconds=60)),
        (3, None, timedelta(minutes=2), timedelta(minutes=4)),
        (1, 900.0, timedelta(minutes=15), timedelta(minutes=15)),  # the server's Retry-After wins
        (3, 10.0, timedelta(minutes=2), timedelta(minutes=4)),  # a shorter Retry-After does not
        (7, None, timedelta(minutes=32), timedelta(minutes=64)),  # 60 s × 2⁶, full jitter in its upper half
    ],
)
def test_a_transient_failure_is_retried_later(
    attempts: int, retry_after: float | None, earliest: timedelta, latest: timedelta
) -> None:
    for seed in range(20):
        at = drip_policy.retry_at(
            TUESDAY_0730, attempts, max_attempts=8, retry_after=retry_after, rng=random.Random(seed)
        )
        assert at is not None
        assert earliest <= at - TUESDAY_0730 <= latest


@pytest.mark.parametrize("attempts", [8, 9])
def test_a_delivery_out_of_attempts_is_not_retried(attempts: int) -> None:
    assert drip_policy.retry_at(TUESDAY_0730, attempts, max_attempts=8, retry_after=60.0) is None


@pytest.mark.parametrize(
    ("status", "goes_on"),
    [("permanent", False), ("transient", True), ("rejected", True)],
)
def test_only_a_refused_address_ends_the_series(status: str, goes_on: bool) -> None:
    assert drip_policy.series_goes_on_after_failure(status) is goes_on


def test_an_outage_waits_two_minutes() -> None:
    assert drip_policy.outage_retry_at(TUESDAY_0730) == TUESDAY_0730 + timedelta(minutes=2)


# ---------------------------------------------------------------------------- leases (wall time)

LEASE = timedelta(minutes=10)


def test_a_task_is_presumed_lost_one_lease_after_it_was_enqueued() -> None:
    assert drip_policy.requeue_lost_tasks_after(LEASE) == LEASE


@pytest.mark.parametrize(
    ("elapsed", "due"),
    [(timedelta(minutes=4, seconds=59), False), (timedelta(minutes=5), True), (timedelta(minutes=9), True)],
)
def test_a_lease_is_renewed_at_half_life(elapsed: timedelta, due: bool) -> None:
    assert drip_policy.lease_renewal_due(TUESDAY_0730, LEASE, TUESDAY_0730 + elapsed) is due


@pytest.mark.parametrize(
    ("grants", "safe_until"),
    [
        ([TUESDAY_0730], TUESDAY_0730 + timedelta(minutes=9)),
        # the latest renewal may have been lost with the server: count from the one before it
        ([TUESDAY_0730, TUESDAY_0730 + timedelta(minutes=5)], TUESDAY_0730 + timedelta(minutes=9)),
        (
            [TUESDAY_0730, TUESDAY_0730 + timedelta(minutes=5), TUESDAY_0730 + timedelta(minutes=10)],
            TUESDAY_0730 + timedelta(minutes=14),
        ),
    ],
)
def test_a_batch_is_safe_until_nine_tenths_of_its_last_sure_lease(grants: list[datetime], safe_until: datetime) -> None:
    assert drip_policy.lease_safe_until(grants, LEASE) == safe_until


def test_reconnect_delays_double_up_to_five_seconds() -> None:
    delays = [drip_policy.FIRST_RECONNECT_DELAY]
    for _ in range(7):
        delays.append(drip_policy.next_reconnect_delay(delays[-1]))
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
