"""Segment rules: which segment a subscriber belongs to, from their attributes *now*.

Attributes come from forms and CSV files, so values are often strings: ``truthy`` accepts
``true/yes/y/1/on`` and comparisons (``gt``, ``gte``...) compare numbers as numbers and
everything else (ISO dates included) as strings. ``within_weeks N`` is the one rule that depends
on the date: it holds when the attribute (``YYYY-MM-DD``, or ``YYYY-MM`` for "some day that
month", as the signup form asks for the race) falls between `today` and N weeks from it.

A campaign written with facets (issue 11) has one composed segment per combination of facet
options; :func:`compose_segments` builds them and :func:`choose_segment` picks the one whose
options every facet chooses for the subscriber.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from cadence.core.campaign import Facet, FacetOption, Rule, Segment
from cadence.errors import CampaignError

_DAY = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")

_TRUE = frozenset({"true", "yes", "y", "1", "on"})


def is_truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return False


def _normalise(value: Any) -> Any:
    """Compare case-insensitively and numbers as numbers."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            return text.lower()
    return value


def date_span(value: Any) -> tuple[date, date] | None:
    """The first and last day a ``YYYY-MM-DD`` or ``YYYY-MM`` value can mean; None if it is neither."""
    match = _DAY.match(str(value).strip()) if value is not None else None
    if match is None:
        return None
    year, month, day = int(match.group(1)), int(match.group(2)), match.group(3)
    try:
        if day is not None:
            one = date(year, month, int(day))
            return one, one
        first = date(year, month, 1)
    except ValueError:
        return None
    following = date(year + month // 12, month % 12 + 1, 1)
    return first, following - timedelta(days=1)


def _within_weeks(value: Any, weeks: Any, today: date) -> bool:
    span = date_span(value)
    if span is None:
        return False
    first, last = span
    return last >= today and first <= today + timedelta(weeks=float(weeks))


def rule_matches(rule: Rule, attributes: Mapping[str, Any], today: date | None = None) -> bool:
    """Whether `rule` holds for `attributes`. `today` is needed by ``within_weeks`` only."""
    if rule.op == "within_weeks":
        if today is None:
            raise CampaignError(f"rule {rule.attribute} within_weeks needs today's date (pass today=)")
        return _within_weeks(attributes.get(rule.attribute), rule.value, today)
    present = attributes.get(rule.attribute) not in (None, "")
    if rule.op == "exists":
        return present
    if rule.op == "missing":
        return not present
    value = attributes.get(rule.attribute)
    if rule.op == "truthy":
        return is_truthy(value)
    if rule.op == "falsy":
        return not is_truthy(value)
    if not present:
        return rule.op in ("ne", "not_in")
    have, want = _normalise(value), rule.value
    if rule.op in ("in", "not_in"):
        found = have in {_normalise(v) for v in want}
        return found if rule.op == "in" else not found
    if rule.op == "contains":
        return str(want).lower() in str(value).lower()
    want = _normalise(want)
    if rule.op == "eq":
        return bool(have == want)
    if rule.op == "ne":
        return bool(have != want)
    try:
        if rule.op == "gt":
            return bool(have > want)
        if rule.op == "gte":
            return bool(have >= want)
        if rule.op == "lt":
            return bool(have < want)
        if rule.op == "lte":
            return bool(have <= want)
    except TypeError:  # a number against a word: no match rather than a crash at send time
        return False
    raise CampaignError(f"unknown rule operator {rule.op!r}")


def _rules_match(rules: Sequence[Rule], match: str, attributes: Mapping[str, Any], today: date | None) -> bool:
    results = (rule_matches(rule, attributes, today) for rule in rules)
    return all(results) if match == "all" else any(results)


def choose_option(facet: Facet, attributes: Mapping[str, Any], today: date | None = None) -> FacetOption:
    """The first option of `facet` whose rules match; the last option (no rules) catches the rest."""
    for option in facet.options:
        if not option.rules or _rules_match(option.rules, option.match, attributes, today):
            return option
    raise CampaignError(f"facet {facet.id!r}: no option matched and the last one is not a fallback")


def segment_matches(segment: Segment, attributes: Mapping[str, Any], today: date | None = None) -> bool:
    if segment.composition:
        return all(choose_option(facet, attributes, today) is option for facet, option in segment.composition)
    if segment.fallback or not segment.rules:
        return True
    return _rules_match(segment.rules, segment.match, attributes, today)


def choose_segment(segments: Sequence[Segment], attributes: Mapping[str, Any], today: date | None = None) -> Segment:
    """The first segment whose rules match; campaigns end with a fallback, so one always does.

    `today` (the send date) matters only to date rules (``within_weeks``). Each facet's option is
    decided once per call, not once per composed segment that names it: with 2 facets of 2 and 3
    options that was 6 evaluations of each facet's rules per email, a quarter of the per-email
    preparation time in the worker (issue 15).
    """
    chosen: dict[int, FacetOption] = {}  # id(facet) -> its option for these attributes

    def option_of(facet: Facet) -> FacetOption:
        option = chosen.get(id(facet))
        if option is None:
            option = chosen[id(facet)] = choose_option(facet, attributes, today)
        return option

    for segment in segments:
        if segment.composition:
            if all(option_of(facet) is option for facet, option in segment.composition):
                return segment
        elif segment_matches(segment, attributes, today):
            return segment
    raise CampaignError("no segment matched and the campaign has no fallback segment")


def compose_segments(facets: Sequence[Facet]) -> tuple[Segment, ...]:
    """One segment per combination of options, in option order (the last is all fallbacks).

    The segment's phase-1 context carries each option's ``context`` plus ``<facet id>: <option
    id>``, so a template asks ``{% if segment.terrain == "trail" %}``.
    """
    combined = []
    for options in itertools.product(*(facet.options for facet in facets)):
        context: dict[str, Any] = {}
        for facet, option in zip(facets, options, strict=True):
            context.update(option.context)
            context[facet.id] = option.id
        combined.append(
            Segment(
                id="+".join(option.id for option in options),
                name=" · ".join(option.name for option in options),
                fallback=all(not option.rules for option in options),
                context=context,
                composition=tuple(zip(facets, options, strict=True)),
            )
        )
    return tuple(combined)
