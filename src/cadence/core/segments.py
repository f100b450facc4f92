"""Segment rules: which segment a subscriber belongs to, from their attributes *now*.

Attributes come from forms and CSV files, so values are often strings: ``truthy`` accepts
``true/yes/y/1/on`` and comparisons (``gt``, ``gte``...) compare numbers as numbers and
everything else (ISO dates included) as strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cadence.core.campaign import Rule, Segment
from cadence.errors import CampaignError

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


def rule_matches(rule: Rule, attributes: Mapping[str, Any]) -> bool:
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


def segment_matches(segment: Segment, attributes: Mapping[str, Any]) -> bool:
    if segment.fallback or not segment.rules:
        return True
    results = (rule_matches(rule, attributes) for rule in segment.rules)
    return all(results) if segment.match == "all" else any(results)


def choose_segment(segments: Sequence[Segment], attributes: Mapping[str, Any]) -> Segment:
    """The first segment whose rules match; campaigns end with a fallback, so one always does."""
    for segment in segments:
        if segment_matches(segment, attributes):
            return segment
    raise CampaignError("no segment matched and the campaign has no fallback segment")
