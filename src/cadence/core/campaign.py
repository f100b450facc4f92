"""The campaign model: what a drip is, independent of where it was written down.

Loading and validating campaign files (YAML) lives in :mod:`cadence.files.campaigns`; this module
only holds the frozen, already-valid objects the rest of the core works with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any, Literal

from cadence.errors import NotFound

RuleOp = Literal[
    "eq",
    "ne",
    "in",
    "not_in",
    "exists",
    "missing",
    "truthy",
    "falsy",
    "contains",
    "gt",
    "gte",
    "lt",
    "lte",
    "within_weeks",
]


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Local wall-clock hours in which emails may go out, and the allowed weekdays.

    ``end`` may be earlier than ``start`` for a window that crosses midnight (22:00-02:00); the
    weekday rule applies to the day the window opens.
    """

    start: time = time(0, 0)
    end: time = time(23, 59, 59)
    weekdays: frozenset[int] = frozenset(range(7))

    @property
    def always_open(self) -> bool:
        return self.start == time(0, 0) and self.end >= time(23, 59, 59) and len(self.weekdays) == 7


@dataclass(frozen=True, slots=True)
class Rule:
    """One condition on a subscriber attribute, e.g. ``terrain eq trails``."""

    attribute: str
    op: RuleOp
    value: Any = None


@dataclass(frozen=True, slots=True)
class FacetOption:
    """One value of a facet, e.g. ``trail`` of ``terrain``. An option without rules is the fallback."""

    id: str
    name: str
    rules: tuple[Rule, ...] = ()
    match: Literal["all", "any"] = "all"
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Facet:
    """One question about a subscriber (terrain, race...): the first option whose rules match wins;
    the last option has no rules, so every subscriber gets exactly one option of every facet."""

    id: str
    options: tuple[FacetOption, ...]


@dataclass(frozen=True, slots=True)
class Segment:
    """A named group of subscribers. ``fallback`` segments match everyone (they come last).

    A campaign written with ``facets`` gets one segment per combination of options (its id joins
    the option ids with ``+``, e.g. ``trail+race-soon``); `composition` then names the option of
    each facet, and the segment matches a subscriber when every facet picks that option for them.
    """

    id: str
    name: str
    rules: tuple[Rule, ...] = ()
    match: Literal["all", "any"] = "all"
    fallback: bool = False
    context: dict[str, Any] = field(default_factory=dict)
    composition: tuple[tuple[Facet, FacetOption], ...] = ()


@dataclass(frozen=True, slots=True)
class ExitGoal:
    """What ends a subscriber's drip early: the conversion it works towards (a booking).

    The same rule language as segments, plus the staff's tags, as a Customer.io "conversion
    goal" reads: a subscriber has reached the goal when any of `tags` is theirs or the `rules`
    hold, and `match` says how the conditions combine (``any``: one is enough, the default;
    ``all``: every tag and every rule). Checked when each step is due
    (``core/drip_policy.skip_reason``), so a tag set between two emails stops the next one.
    """

    tags: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    match: Literal["all", "any"] = "any"

    def describe(self) -> str:
        """One line for people: ``tag booked, or booked is truthy``."""
        parts = [f"tag {tag}" for tag in self.tags]
        parts += [f"{r.attribute} {r.op}" + ("" if r.value is None else f" {r.value}") for r in self.rules]
        return (", or " if self.match == "any" else ", and ").join(parts)


@dataclass(frozen=True, slots=True)
class Step:
    """One email of a drip. ``delay`` counts from the previous step's send (or enrollment)."""

    id: str
    template: str
    delay: timedelta
    after: Literal["previous", "enrollment"] = "previous"


@dataclass(frozen=True, slots=True)
class Tracking:
    opens: bool = True
    clicks: bool = True
    utm: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Campaign:
    """A drip campaign: ordered steps, segments (first match wins), a send window, exit goals."""

    id: str
    name: str
    sender_name: str
    sender_email: str
    timezone: str
    segments: tuple[Segment, ...]
    steps: tuple[Step, ...]
    send_window: SendWindow = SendWindow()
    reply_to: str | None = None
    description: str = ""
    # Event kinds that end an enrollment the moment they are recorded (engine.record_event).
    exit_goals: frozenset[str] = frozenset()
    # The condition on attributes and tags checked when each step is due (see ExitGoal).
    exit_goal: ExitGoal | None = None
    context: dict[str, Any] = field(default_factory=dict)
    tracking: Tracking = Tracking()
    facets: tuple[Facet, ...] = ()
    source: str = ""  # the file it came from, for error messages
    # (field, page) of each ``guide:<page>`` link in `context`, already resolved to a URL there;
    # validation checks the page files exist (cadence.files.guide_pages, issue 11).
    guide_links: tuple[tuple[str, str], ...] = ()

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise NotFound(f"campaign {self.id!r} has no step {step_id!r}")

    def step_index(self, step_id: str) -> int:
        return self.steps.index(self.step(step_id))

    def segment(self, segment_id: str) -> Segment:
        for segment in self.segments:
            if segment.id == segment_id:
                return segment
        # With the list, as enroll and send-test give it (issue 13 trial: search gave none).
        listing = "; ".join(f"{s.id} ({s.name})" for s in self.segments)
        raise NotFound(f"campaign {self.id!r} has no segment {segment_id!r}; segments: {listing}")
