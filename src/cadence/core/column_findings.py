"""Which columns of an import the campaigns' segment rules read, and which they do not.

A list exported from another tool rarely names its columns the way the segment rules do. A
``Runs on trails`` column becomes the attribute ``runs_on_trails``, which no rule reads: the
import succeeds and everyone lands in the fallback segment, silently. So the import summary
(cadence.cli.importing) says, per campaign: the columns its rules read, the columns nothing
reads (with a "did you mean" when one resembles a rule's attribute, by name or by the values
the rule compares with: ``trails`` in ``Runs on trails`` → ``terrain eq trails``), and the
attributes the rules read that the file lacks (with the fallback those people land in).

Pure: takes the header and the campaigns, returns plain data.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cadence.core.campaign import Campaign, Rule
from cadence.core.segments import rule_matches

# Columns that are not attributes: the importer maps them to the subscriber's own fields.
OWN_FIELDS = ("email", "first_name", "timezone", "tags")  # tags: real tags (subscriber_csv)


@dataclass(frozen=True)
class Suggestion:
    attribute: str
    rule: str  # "terrain eq trails"


@dataclass(frozen=True)
class UnusedColumn:
    column: str  # as the file names it
    attribute: str  # as it is stored
    suggestion: Suggestion | None = None


@dataclass(frozen=True)
class MissingAttribute:
    attribute: str
    fallback: str  # the segment or facet option those without it land in


@dataclass(frozen=True)
class CampaignFindings:
    campaign: str
    read: list[tuple[str, str]] = field(default_factory=list)  # (column, attribute)
    unused: list[UnusedColumn] = field(default_factory=list)
    missing: list[MissingAttribute] = field(default_factory=list)


def _rules(campaign: Campaign) -> Iterable[tuple[Rule, str]]:
    """Every rule with the fallback a subscriber lands in when it does not hold."""
    if campaign.facets:
        for facet in campaign.facets:
            fallback = next((o.name for o in facet.options if not o.rules), facet.options[-1].name)
            for option in facet.options:
                for rule in option.rules:
                    yield rule, f"{fallback!r} (of {facet.id})"
        return
    fallback = next((s.name for s in campaign.segments if s.fallback or not s.rules), "the last segment")
    for segment in campaign.segments:
        for rule in segment.rules:
            yield rule, repr(fallback)


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[\W_]+", text.lower()) if len(w) > 2}


def _describe(rule: Rule) -> str:
    if rule.value is None:
        return f"{rule.attribute} {rule.op}"
    value = ", ".join(map(str, rule.value)) if isinstance(rule.value, list | tuple) else str(rule.value)
    return f"{rule.attribute} {rule.op} {value}"


def _suggest(
    attribute: str, rules: Sequence[Rule], candidates: set[str], seen: Iterable[str] = ()
) -> Suggestion | None:
    """A rule attribute the column probably meant: one whose values the column's name mentions
    (``Runs on trails`` and ``terrain eq trails``) or its values do (a ``Runs on`` column
    holding ``trails``, cold trial), else one whose name is close (difflib)."""
    words = _words(attribute) | {w for value in seen for w in _words(str(value))}
    for rule in rules:
        if rule.attribute not in candidates:
            continue
        values = rule.value if isinstance(rule.value, list | tuple) else [rule.value]
        mentioned = {w for v in values if v is not None for w in _words(str(v))}
        singular = {w.rstrip("s") for w in words}
        if words & (mentioned | _words(rule.attribute)) or singular & {m.rstrip("s") for m in mentioned}:
            return Suggestion(rule.attribute, _describe(rule))
    close = difflib.get_close_matches(attribute, sorted(candidates), n=1, cutoff=0.6)
    if close:
        rule = next(r for r in rules if r.attribute == close[0])
        return Suggestion(close[0], _describe(rule))
    return None


def column_findings(
    names: Sequence[str],
    fields: Sequence[str],
    campaigns: Sequence[Campaign],
    values: Mapping[str, Mapping[str, int]] | None = None,
) -> list[CampaignFindings]:
    """Per campaign: what its rules read of these columns (`names` as in the file, `fields` what
    the importer made of each: an own field, an attribute name, or '' / '-' for none; `values`:
    attribute → value → rows, as the importer counted them, for the "did you mean")."""
    attributes = [(n, f) for n, f in zip(names, fields, strict=True) if f and f != "-" and f not in OWN_FIELDS]
    found = []
    for campaign in campaigns:
        rules_with_fallback = list(_rules(campaign))
        rules = [rule for rule, _ in rules_with_fallback]
        wanted = {rule.attribute for rule in rules}
        present = {attribute for _, attribute in attributes}
        lacking = wanted - present
        findings = CampaignFindings(campaign.id)
        for column, attribute in attributes:
            if attribute in wanted:
                findings.read.append((column, attribute))
            else:
                held = (values or {}).get(attribute, {})
                findings.unused.append(UnusedColumn(column, attribute, _suggest(attribute, rules, lacking, held)))
        seen: set[str] = set()
        for rule, fallback in rules_with_fallback:
            if rule.attribute in lacking and rule.attribute not in seen:
                seen.add(rule.attribute)
                findings.missing.append(MissingAttribute(rule.attribute, fallback))
        found.append(findings)
    return found


@dataclass(frozen=True)
class UnmatchedValues:
    """Values of a column that no ``eq``/``in`` rule on its attribute accepts: a file saying
    ``trail`` where the rule wants ``trails`` puts those people in the fallback, silently
    (issue 13 trial)."""

    campaign: str
    attribute: str
    values: list[tuple[str, int]]  # (value, rows), most rows first
    wanted: list[str]  # the values the rules compare with
    fallback: str


def value_findings(values: Mapping[str, Mapping[str, int]], campaigns: Sequence[Campaign]) -> list[UnmatchedValues]:
    """Per campaign and attribute compared by ``eq``/``in`` rules: the file's values (`values`:
    attribute → value → rows, as the importer counted them) that none of those rules accepts
    although they resemble a value one of them wants (a misspelling, a singular)."""
    found = []
    for campaign in campaigns:
        by_attribute: dict[str, list[tuple[Rule, str]]] = {}
        for rule, fallback in _rules(campaign):
            if rule.op in ("eq", "in") and rule.attribute in values:
                by_attribute.setdefault(rule.attribute, []).append((rule, fallback))
        for attribute, rules in by_attribute.items():
            wanted = [str(v) for rule, _ in rules for v in _listed(rule.value)]
            # Only values that look like a wanted one (``trail`` for ``trails``): the others, such
            # as ``road``, are meant for the fallback option and are no mistake.
            unmatched = [
                (value, rows)
                for value, rows in values[attribute].items()
                if value
                and not any(rule_matches(rule, {attribute: value}) for rule, _ in rules)
                and difflib.get_close_matches(value, [w.lower() for w in wanted], n=1, cutoff=0.75)
            ]
            if not unmatched:
                continue
            unmatched.sort(key=lambda pair: (-pair[1], pair[0]))
            found.append(UnmatchedValues(campaign.id, attribute, unmatched, list(dict.fromkeys(wanted)), rules[0][1]))
    return found


def _listed(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else [value]
