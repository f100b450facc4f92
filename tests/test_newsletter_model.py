"""The pure newsletter model (core/newsletter.py): file validation names the file and field, send
times (an instant, or a local time per subscriber's zone), the audience rules, the states."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from cadence.core.campaign import Rule
from cadence.core.newsletter import (
    Audience,
    effective_state,
    in_audience,
    newsletter_from_data,
    parse_send_time,
    send_instant,
    skip_reason,
    transition,
)
from cadence.core.segments import compose_segments
from cadence.errors import CampaignError, InputError
from cadence.files.campaigns import load_campaign
from tests.support.cluster import ROOT

SOURCE = "campaigns/newsletters/n.yaml"
NOW = datetime(2027, 1, 5, 12, 0, tzinfo=UTC)


def data(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "newsletter",
        "id": "n",
        "based_on": "lower-back-pain",
        "subject": "Hello",
        "preheader": "A preheader long enough to read well in an inbox list.",
        "body": "Some *Markdown*.",
        "audience": {"topics": ["clinic-news"]},
        "send_at": "2027-01-12 09:00 local",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_a_valid_file_becomes_a_newsletter() -> None:
    newsletter = newsletter_from_data(data(), SOURCE)
    assert newsletter.audience.topics == ("clinic-news",)
    assert str(newsletter.send_time) == "2027-01-12 09:00 local"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"kind": "drip"}, f"{SOURCE}: kind: Input should be 'newsletter'"),
        ({"template": "x.mjml"}, f"{SOURCE}: (top level): give either body (Markdown) or template"),
        ({"audience": {"rules": []}}, f"{SOURCE}: audience: give topics"),
        ({"send_at": "tomorrow"}, f"{SOURCE}: send_at: send_at: 'tomorrow' is not a send time"),
        ({"send_at": "2027-01-12T09:00:00"}, "write an instant with its offset"),
        ({"audience": {"topics": ["a"], "rules": [{"attribute": "x", "op": "between"}]}}, "audience.rules.0.op"),
        ({"audience": {"topics": ["a"], "rules": [{"attribute": "x", "op": "eq"}]}}, "op 'eq' needs a value"),
        ({"timezone": "Mars/Olympus"}, f"{SOURCE}: timezone: 'Mars/Olympus' is not an IANA time zone"),
        ({"id": "Bad Id"}, f"{SOURCE}: id: String should match pattern"),
        ({"colour": "red"}, f"{SOURCE}: colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_field(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(CampaignError) as caught:
        newsletter_from_data(data(**changes), SOURCE)
    assert expected in str(caught.value)


def test_a_local_send_time_is_each_subscribers_own_wall_clock() -> None:
    local = parse_send_time("2027-01-12 09:00 local")
    assert send_instant(local, "Europe/Paris", "America/New_York", NOW) == datetime(2027, 1, 12, 8, tzinfo=UTC)
    assert send_instant(local, "Asia/Tokyo", "America/New_York", NOW) == datetime(2027, 1, 12, 0, tzinfo=UTC)
    # No zone, or one we cannot read: the sender's default zone.
    assert send_instant(local, None, "America/New_York", NOW) == datetime(2027, 1, 12, 14, tzinfo=UTC)
    assert send_instant(local, "Nowhere/Else", "America/New_York", NOW) == datetime(2027, 1, 12, 14, tzinfo=UTC)


def test_a_local_time_in_the_spring_forward_gap_is_read_with_the_offset_before_it() -> None:
    gap = parse_send_time("2027-03-14 02:30 local")  # does not exist in New York that night
    assert send_instant(gap, "America/New_York", "UTC", NOW) == datetime(2027, 3, 14, 7, 30, tzinfo=UTC)


def test_an_instant_is_the_same_for_everyone_and_now_is_the_scheduling_time() -> None:
    instant = parse_send_time("2027-01-12T09:00:00-05:00")
    assert send_instant(instant, "Asia/Tokyo", "UTC", NOW) == datetime(2027, 1, 12, 14, tzinfo=UTC)
    assert send_instant(parse_send_time("now"), "Asia/Tokyo", "UTC", NOW) == NOW
    with pytest.raises(InputError, match="not a real day"):
        parse_send_time("2027-02-30 09:00 local")


def test_the_audience_needs_every_part_it_names() -> None:
    course = load_campaign(ROOT / "campaigns" / "lower-back-pain.yaml")
    segments = compose_segments(course.facets)
    trail = {"terrain": "trails"}
    audience = Audience(topics=("clinic-news",), tags=("vip",), rules=(Rule("terrain", "eq", "trails"),))
    assert in_audience(audience, attributes=trail, topics={"clinic-news"}, tags={"vip"}) is None
    assert in_audience(audience, attributes=trail, topics={"other"}, tags={"vip"}) is False
    assert in_audience(audience, attributes=trail, topics={"clinic-news"}, tags=set()) is False
    assert in_audience(audience, attributes={"terrain": "road"}, topics={"clinic-news"}, tags={"vip"}) is False
    by_segment = Audience(topics=("clinic-news",), segments_campaign="lower-back-pain", segments=("trail+no-race",))
    found = in_audience(
        by_segment, attributes=trail, topics={"clinic-news"}, tags=(), segments=segments, today=date(2027, 1, 5)
    )
    assert found and found.id == "trail+no-race"
    road = in_audience(
        by_segment, attributes={}, topics={"clinic-news"}, tags=(), segments=segments, today=date(2027, 1, 5)
    )
    assert road is False


def test_states_move_only_as_staff_may_move_them() -> None:
    assert transition("draft", "schedule", "n") == "scheduled"
    assert transition("sending", "pause", "n") == "paused"
    assert transition("paused", "resume", "n") == "scheduled"
    assert transition("paused", "cancel", "n") == "cancelled"
    for current, action in [("sent", "pause"), ("cancelled", "resume"), ("sent", "cancel"), ("sending", "schedule")]:
        with pytest.raises(InputError, match=f"is {current}: it cannot be"):
            transition(current, action, "n")
    assert effective_state("scheduled", pending=3, finished=0) == "scheduled"
    assert effective_state("scheduled", pending=3, finished=1) == "sending"
    assert effective_state("sending", pending=0, finished=4) == "sent"
    assert effective_state("paused", pending=0, finished=4) == "paused"


def test_a_copy_is_skipped_when_anything_changed_since_scheduling() -> None:
    ok = {"newsletter_state": "sending", "subscriber_status": "active", "suppressed": False}
    assert skip_reason(**ok, topics_wanted=("clinic-news",), topics_held={"clinic-news"}) == ""
    assert skip_reason(**{**ok, "subscriber_status": "unsubscribed"}, topics_wanted=(), topics_held=()) != ""
    assert skip_reason(**{**ok, "suppressed": True}, topics_wanted=(), topics_held=()) == "address suppressed"
    assert skip_reason(**{**ok, "newsletter_state": "cancelled"}, topics_wanted=(), topics_held=()) != ""
    assert "topic" in skip_reason(**ok, topics_wanted=("clinic-news",), topics_held=set())
