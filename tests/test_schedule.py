"""Schedule math: windows, weekdays, DST, time zones on both sides of the date line."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from cadence.core.campaign import Campaign, Segment, SendWindow, Step
from cadence.core.schedule import next_send_at, step_due_at, subscriber_zone

NY = ZoneInfo("America/New_York")
WEEKDAYS = frozenset(range(5))
MORNING = SendWindow(time(7), time(9), frozenset(range(6)))  # Mon-Sat 07:00-09:00


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_time_inside_the_window_is_kept() -> None:
    # Tue 1 Dec 2026 07:30 in New York = 12:30 UTC
    assert next_send_at(utc(2026, 12, 1, 12, 30), MORNING, NY) == utc(2026, 12, 1, 12, 30)


def test_a_time_before_the_window_waits_for_it_to_open() -> None:
    assert next_send_at(utc(2026, 12, 1, 10, 0), MORNING, NY) == utc(2026, 12, 1, 12, 0)


def test_a_time_after_the_window_moves_to_the_next_day() -> None:
    assert next_send_at(utc(2026, 12, 1, 15, 0), MORNING, NY) == utc(2026, 12, 2, 12, 0)


def test_the_window_end_is_exclusive() -> None:
    assert next_send_at(utc(2026, 12, 1, 14, 0), MORNING, NY) == utc(2026, 12, 2, 12, 0)


def test_disallowed_weekdays_are_skipped() -> None:
    # Saturday 5 Dec 2026 15:00 local is after the window; Sunday is not allowed: Monday 07:00.
    assert next_send_at(utc(2026, 12, 5, 20, 0), MORNING, NY) == utc(2026, 12, 7, 12, 0)
    weekdays_only = SendWindow(time(7), time(9), WEEKDAYS)
    assert next_send_at(utc(2026, 12, 4, 20, 0), weekdays_only, NY) == utc(2026, 12, 7, 12, 0)


def test_weekday_is_judged_in_the_subscribers_zone_not_utc() -> None:
    # 03:00 UTC Monday is still Sunday evening in New York: the window is Monday 07:00 local.
    sunday_off = SendWindow(time(7), time(9), WEEKDAYS)
    assert next_send_at(utc(2026, 12, 7, 3, 0), sunday_off, NY) == utc(2026, 12, 7, 12, 0)


def test_spring_forward_keeps_the_wall_clock_window() -> None:
    # 8 Mar 2026: New York moves from UTC-5 to UTC-4 at 02:00. 07:00 local is 11:00 UTC.
    assert next_send_at(utc(2026, 3, 8, 3, 0), SendWindow(time(7), time(9)), NY) == utc(2026, 3, 8, 11, 0)
    assert next_send_at(utc(2026, 3, 7, 3, 0), SendWindow(time(7), time(9)), NY) == utc(2026, 3, 7, 12, 0)


def test_a_window_opening_inside_the_dst_gap_opens_after_it() -> None:
    gap = SendWindow(time(2, 30), time(4, 0))
    opens = next_send_at(utc(2026, 3, 8, 5, 0), gap, NY)
    assert opens == utc(2026, 3, 8, 7, 30)  # 03:30 EDT, RFC 5545 §3.3.5
    assert opens.astimezone(NY).hour == 3


def test_fall_back_opens_the_window_once() -> None:
    # 1 Nov 2026 01:00-01:59 happens twice in New York; the first occurrence (EDT) is used.
    night = SendWindow(time(1, 30), time(1, 45))
    assert next_send_at(utc(2026, 11, 1, 4, 0), night, NY) == utc(2026, 11, 1, 5, 30)
    # After the first window closed, the repeated hour does not open it again: next day.
    assert next_send_at(utc(2026, 11, 1, 5, 50), night, NY) == utc(2026, 11, 2, 6, 30)


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Pacific/Auckland", utc(2026, 11, 30, 18, 0)),  # UTC+13 in summer: Tue 07:00 local
        ("Pacific/Kiritimati", utc(2026, 11, 30, 17, 0)),  # UTC+14
        ("Pacific/Pago_Pago", utc(2026, 11, 30, 18, 0)),  # UTC-11: Mon 07:00 local, a day "behind" Auckland
        ("Pacific/Honolulu", utc(2026, 11, 30, 17, 0)),  # UTC-10
    ],
)
def test_zones_on_both_sides_of_the_date_line(zone: str, expected: datetime) -> None:
    start = utc(2026, 11, 30, 12, 0)  # Monday 30 Nov 12:00 UTC
    got = next_send_at(start, MORNING, ZoneInfo(zone))
    assert got == expected
    local = got.astimezone(ZoneInfo(zone))
    assert time(7) <= local.time() < time(9) and local.weekday() in MORNING.weekdays


def test_a_window_crossing_midnight() -> None:
    late = SendWindow(time(22), time(2))
    assert next_send_at(utc(2026, 12, 2, 5, 0), late, NY) == utc(2026, 12, 2, 5, 0)  # 00:00 local, still open
    assert next_send_at(utc(2026, 12, 2, 8, 0), late, NY) == utc(2026, 12, 3, 3, 0)


def test_results_always_fall_inside_the_window_for_random_instants() -> None:
    rng = random.Random(42)
    zones = [ZoneInfo(z) for z in ("America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu")]
    for _ in range(2000):
        start = utc(2026, 1, 1) + timedelta(minutes=rng.randrange(0, 525600))
        tz = rng.choice(zones)
        got = next_send_at(start, MORNING, tz)
        local = got.astimezone(tz)
        assert got >= start
        assert got - start < timedelta(days=3)
        assert local.weekday() in MORNING.weekdays
        assert time(7) <= local.time() < time(9) or local.time() == time(7)


def _campaign(*steps: Step) -> Campaign:
    return Campaign(
        id="c",
        name="C",
        sender_name="S",
        sender_email="s@example.com",
        timezone="America/New_York",
        segments=(Segment("all", "All", fallback=True),),
        steps=steps,
        send_window=MORNING,
    )


def test_step_delays_count_from_the_previous_send() -> None:
    campaign = _campaign(Step("a", "a", timedelta(0)), Step("b", "b", timedelta(days=2)))
    enrolled = utc(2026, 11, 30, 20, 0)  # Monday 15:00 local: after the window
    first = step_due_at(campaign, 0, enrolled_at=enrolled, previous_sent_at=None, tz=NY)
    assert first == utc(2026, 12, 1, 12, 0)
    sent = first + timedelta(minutes=3)
    assert step_due_at(campaign, 1, enrolled_at=enrolled, previous_sent_at=sent, tz=NY) == sent + timedelta(days=2)


def test_steps_after_enrollment_ignore_the_previous_send() -> None:
    campaign = _campaign(Step("a", "a", timedelta(0)), Step("b", "b", timedelta(days=7), after="enrollment"))
    enrolled = utc(2026, 12, 1, 12, 30)
    due = step_due_at(campaign, 1, enrolled_at=enrolled, previous_sent_at=utc(2026, 12, 5, 12, 0), tz=NY)
    assert due == enrolled + timedelta(days=7)


def test_subscriber_zone_falls_back_to_the_campaign_zone() -> None:
    campaign = _campaign(Step("a", "a", timedelta(0)))
    assert subscriber_zone("Asia/Tokyo", campaign) == ZoneInfo("Asia/Tokyo")
    assert subscriber_zone(None, campaign) == NY
    assert subscriber_zone("Not/AZone", campaign) == NY



# Windows at night, across midnight and inside DST gaps, in zones whose clocks change at 02:00
# (Paris), at midnight (Santiago, Beirut, Havana) or by half an hour (Lord Howe): the probe that
# looked for the Paris subscriber "queued with no next send time" (issue 13 trial).
DST_ZONES = ["Europe/Paris", "America/Santiago", "Asia/Beirut", "America/Havana", "Australia/Lord_Howe"]
NIGHT_WINDOWS = [
    SendWindow(time(7), time(9), frozenset(range(6))),
    SendWindow(time(0), time(2)),
    SendWindow(time(23), time(1)),
    SendWindow(time(2), time(3)),  # wholly inside Paris's spring-forward gap on 29 March 2026
    SendWindow(time(0, 30), time(1, 30)),  # wholly inside Santiago's and Beirut's midnight gaps
    SendWindow(time(22), time(2)),
]
DST_WEEKS = [utc(2026, 3, 25), utc(2026, 4, 1), utc(2026, 9, 2), utc(2026, 9, 23), utc(2026, 10, 21)]


def _inside(at: datetime, window: SendWindow, tz: ZoneInfo) -> bool:
    local_day = at.astimezone(tz).date()
    for day in (local_day - timedelta(days=1), local_day):
        if day.weekday() not in window.weekdays:
            continue
        opens = datetime.combine(day, window.start).replace(tzinfo=tz).astimezone(UTC)
        close_day = day + timedelta(days=1) if window.end <= window.start else day
        closes = datetime.combine(close_day, window.end).replace(tzinfo=tz).astimezone(UTC)
        if opens <= at < closes:
            return True
    return False


@pytest.mark.parametrize("zone", DST_ZONES)
@pytest.mark.parametrize("window", NIGHT_WINDOWS, ids=lambda w: f"{w.start:%H%M}-{w.end:%H%M}")
def test_every_send_time_is_inside_a_window_that_exists_and_is_never_postponed_twice(
    zone: str, window: SendWindow
) -> None:
    from cadence.core.drip_policy import postpone_until

    tz = ZoneInfo(zone)
    for week in DST_WEEKS:
        for quarter in range(0, 8 * 24 * 4, 3):  # every 45 minutes over eight days
            start = week + timedelta(minutes=15 * quarter)
            due = next_send_at(start, window, tz)
            assert due >= start and _inside(due, window, tz), (start, due)
            assert next_send_at(due, window, tz) == due  # a due time is a fixed point
            # Sent when due: not postponed. Sent late (a backlog): postponed once, to a time
            # at which it is then sent.
            assert postpone_until(now=due, due_at=due, paused_until=None, window=window, tz=tz) is None
            late = due + timedelta(hours=2)
            later = postpone_until(now=late, due_at=due, paused_until=None, window=window, tz=tz)
            if later is not None:
                assert later > late
                assert postpone_until(now=later, due_at=due, paused_until=None, window=window, tz=tz) is None


def test_a_window_wholly_inside_the_spring_forward_gap_skips_that_day() -> None:
    paris = ZoneInfo("Europe/Paris")
    night = SendWindow(time(2), time(3))
    # Saturday 28 March 03:00 Paris, after that night's window: Sunday's 02:00-03:00 does not
    # exist (clocks jump from 02:00 to 03:00), so the next window is Monday's.
    got = next_send_at(utc(2026, 3, 28, 2, 0), night, paris)
    assert got == utc(2026, 3, 30, 0, 0) and got.astimezone(paris).hour == 2
