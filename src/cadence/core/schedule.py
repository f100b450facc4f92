"""Schedule math: when is a step due, given delays, a send window and a time zone.

Pure functions; `now` and every other instant are arguments (aware datetimes in UTC in, UTC out).
Windows are local wall-clock hours. Around DST changes we reason in local wall time and convert
with ``zoneinfo``: a window opening at a time that does not exist that day (spring forward)
opens as far after the gap's start as it was meant to (RFC 5545 §3.3.5), and a window that lies
wholly inside the gap does not exist that day; an ambiguous time (fall back) uses its first
occurrence (``fold=0``), so a window never opens twice in one night (PEP 495).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cadence.core.campaign import Campaign, SendWindow

__all__ = [
    "next_send_at",
    "step_due_at",
    "subscriber_zone",
]

_MAX_DAYS_AHEAD = 14  # a window with at least one weekday opens within a week; two for safety


def _local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of wall time `at` on `day` in `tz`.

    ``fold=0`` gives the first occurrence of an ambiguous time and, for a time inside the
    spring-forward gap, the offset from before the gap: 02:30 becomes 03:30 daylight time,
    the interpretation RFC 5545 §3.3.5 prescribes for calendars.
    """
    return datetime.combine(day, at).replace(tzinfo=tz, fold=0).astimezone(UTC)


def _window_bounds(day: date, window: SendWindow, tz: ZoneInfo) -> tuple[datetime, datetime]:
    opens = _local(day, window.start, tz)
    closes_day = day + timedelta(days=1) if window.end <= window.start else day
    closes = _local(closes_day, window.end, tz)
    return opens, closes


def next_send_at(earliest: datetime, window: SendWindow, tz: ZoneInfo) -> datetime:
    """The first instant at or after `earliest` that falls inside `window` in time zone `tz`."""
    if earliest.tzinfo is None:
        raise ValueError("earliest must be timezone-aware")
    earliest = earliest.astimezone(UTC)
    if window.always_open:
        return earliest
    if not window.weekdays:
        raise ValueError("send window has no weekdays")
    local_day = earliest.astimezone(tz).date()
    # Start a day early: a window crossing midnight may have opened yesterday and still be open.
    for offset in range(-1, _MAX_DAYS_AHEAD):
        day = local_day + timedelta(days=offset)
        if day.weekday() not in window.weekdays:
            continue
        opens, closes = _window_bounds(day, window, tz)
        # A window wholly inside a spring-forward gap (02:00-03:00 in Paris on the last Sunday
        # of March) opens and closes at the same instant: it does not exist that day. Returning
        # its opening sent the email at the window's end, and a delivery late by more than the
        # grace was postponed to it and then postponed once more (found probing DST and
        # midnight windows, issue 13 "Paris" note; tests/test_schedule.py).
        if earliest < closes and opens < closes:
            return max(earliest, opens)
    raise ValueError("no send window found in the next two weeks")  # unreachable with weekdays


def step_due_at(
    campaign: Campaign,
    step_index: int,
    *,
    enrolled_at: datetime,
    previous_sent_at: datetime | None,
    tz: ZoneInfo,
) -> datetime:
    """When step `step_index` of `campaign` goes out for one subscriber.

    The delay counts from the previous step's actual send (what Customer.io and Mautic do: a
    late send pushes the rest of the series back instead of bunching emails together), or
    from enrollment for the first step and for steps with ``after: enrollment``.
    """
    step = campaign.steps[step_index]
    if step.after == "enrollment" or step_index == 0 or previous_sent_at is None:
        base = enrolled_at
    else:
        base = previous_sent_at
    return next_send_at(base + step.delay, campaign.send_window, tz)


def subscriber_zone(subscriber_tz: str | None, campaign: Campaign) -> ZoneInfo:
    """The subscriber's zone if they have a valid one, else the campaign's."""
    return zone_for(subscriber_tz, campaign.timezone)


def zone_for(subscriber_tz: str | None, default_tz: str | None) -> ZoneInfo:
    """The subscriber's zone if they have a valid one, else `default_tz` (a campaign's or a
    newsletter's), else UTC: the zone the send path reads their local times in."""
    from zoneinfo import ZoneInfoNotFoundError

    for name in (subscriber_tz, default_tz):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")
