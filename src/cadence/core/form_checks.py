"""Checks of a signup form against the other files it names (issue 12): the drip it joins must
exist and read its answers, its topics must be the sender's. Pure: given loaded objects, returns
:class:`FormProblem` findings; ``cadence campaigns validate`` prints them (cadence.files.forms)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cadence.core.campaign import Campaign, Rule
from cadence.core.signup_forms import SignupForm


@dataclass(frozen=True)
class FormProblem:
    """One finding of :func:`check_against_drip` and :func:`check_joins`."""

    source: str
    message: str
    severity: Literal["error", "warning"] = "error"
    loc: tuple[str, ...] = ()  # where in the file (for its line: :func:`line_of`)


def _rules(campaign: Campaign) -> list[Rule]:
    rules = [rule for facet in campaign.facets for option in facet.options for rule in option.rules]
    return rules + [rule for segment in campaign.segments for rule in segment.rules]


def check_joins(form: SignupForm, drips: set[str], topics: set[str]) -> list[FormProblem]:
    """An unknown drip or topic is an error: a confirmed signup would join nothing."""
    problems = []
    if form.drip is not None and form.drip not in drips:
        known = ", ".join(sorted(drips))
        problems.append(
            FormProblem(form.source, f"joins.drip: no campaign {form.drip!r} (known: {known})", loc=("joins", "drip"))
        )
    for topic in form.topics:
        if topic not in topics:
            known = ", ".join(sorted(topics)) or "none: list them under topics in the sender file"
            message = f"joins.topics: unknown topic {topic!r} (known: {known})"
            problems.append(FormProblem(form.source, message, loc=("joins", "topics")))
    return problems


def check_against_drip(form: SignupForm, drip: Campaign) -> list[FormProblem]:
    """Every answer of `form` must reach a segment rule of `drip`: a question whose attribute no
    rule reads changes nothing (a warning), and a rule that compares an attribute to a value no
    choice gives can never match (an error: usually a typo in one of the two files)."""
    problems: list[FormProblem] = []
    rules = _rules(drip)
    for index, question in enumerate(form.questions):
        where = ("questions", str(index))
        reading = [r for r in rules if r.attribute == question.attribute]
        if not reading:
            problems.append(
                FormProblem(
                    form.source,
                    f"question {question.id!r}: no segment rule of {drip.id!r} reads attribute "
                    f"{question.attribute!r}, so this answer changes no email",
                    "warning",
                    where,
                )
            )
            continue
        if question.kind == "month":
            continue
        values = {v.lower() for v, _ in question.choices}
        for rule in reading:
            wanted = rule.value if isinstance(rule.value, list) else [rule.value]
            if rule.op in ("eq", "ne", "in", "not_in"):
                for value in wanted:
                    if str(value).lower() not in values:
                        problems.append(
                            FormProblem(
                                form.source,
                                f"question {question.id!r}: segment rule '{rule.attribute} {rule.op} {value}' of "
                                f"{drip.id!r} compares to {value!r}, which no choice gives "
                                f"({', '.join(v for v, _ in question.choices)})",
                                loc=where,
                            )
                        )
    return problems
