"""choose_segment decides each facet once per subscriber (issue 15): the same segment as testing
every composed segment in order, for every combination of the course's attributes."""

from __future__ import annotations

import itertools
from datetime import date

from cadence.core.campaign import Segment
from cadence.core.segments import choose_segment, segment_matches
from tests.support.course import course_campaign

TODAY = date(2026, 12, 7)


def first_matching(segments: tuple[Segment, ...], attributes: dict[str, object]) -> Segment:
    return next(s for s in segments if segment_matches(s, attributes, TODAY))


def test_choose_segment_equals_the_first_segment_whose_rules_match() -> None:
    segments = course_campaign().segments
    values = {
        "terrain": [None, "", "trails", " Trails ", "roads", 3],
        "training_for_race": [None, "yes", "no", "1", True, False, "maybe"],
        "race_month": [None, "2026-12", "2027-01-15", "2027-06", "2025-01", "not a date", ""],
    }
    chosen = set()
    for combination in itertools.product(*values.values()):
        attributes = {k: v for k, v in zip(values, combination, strict=True) if v is not None}
        segment = choose_segment(segments, attributes, TODAY)
        assert segment is first_matching(segments, attributes), attributes
        chosen.add(segment.id)
    assert len(chosen) == len(segments) == 6  # every composed segment is reachable
