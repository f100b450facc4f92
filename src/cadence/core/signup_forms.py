"""Signup forms as data (issue 12): what a form asks, what each answer sets, the consent wording,
the page copy, and what a confirmed signup joins (a drip and newsletter topics).

Pure: :func:`form_from_text` takes the file's text and name and returns a :class:`SignupForm`, or
raises :class:`~cadence.errors.CampaignError` naming the file, the field and its line
(``campaigns/forms/runners.yaml:14: questions.0.choices: ...``). Reading files is
:mod:`cadence.files.forms`' job; checking a form against the drip it joins is
:mod:`cadence.core.form_checks`'.

The consent wording is versioned as it always was: ``signup-v1-`` and the first 12 hex digits of
the SHA-256 of the exact text, so every stored consent can be traced to the words the person saw
(GDPR Art. 7(1)); changing a comma makes a new version.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cadence.core.segments import is_truthy
from cadence.errors import CampaignError

_ID = r"^[a-z0-9][a-z0-9_-]*$"
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
QuestionKind = Literal["choice", "yes_no", "month"]
# Field names the page itself uses: a question may not take one.
_RESERVED = frozenset({"email", "first_name", "csrf_token", "website", "consent_version", "page_url"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChoiceModel(_Model):
    value: str = Field(min_length=1, max_length=100)
    label: str = Field(min_length=1)


class ShownIfModel(_Model):
    question: str
    value: str


class QuestionModel(_Model):
    id: str = Field(pattern=_ID)
    label: str = Field(min_length=1)
    kind: QuestionKind = "choice"
    attribute: str | None = Field(default=None, pattern=_ID)
    required: bool = True
    help: str = ""
    error: str = Field(default="", description="What the page says next to the field when it needs another look.")
    empty_label: str = "Not sure"
    choices: list[ChoiceModel] = Field(default_factory=list)
    # The answer counts only when another question got this answer (the race month only when
    # training for a race); otherwise it is stored empty.
    counts_if: ShownIfModel | None = None

    @model_validator(mode="after")
    def _choices(self) -> QuestionModel:
        if self.kind == "choice" and len(self.choices) < 2:
            raise ValueError("choices: a choice question needs at least two choices")
        if self.kind != "choice" and self.choices:
            raise ValueError(f"choices: a {self.kind} question has its own choices; remove them")
        values = [c.value for c in self.choices]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"choices: duplicate value(s) {', '.join(dupes)}")
        if self.id in _RESERVED:
            raise ValueError(f"id: {self.id!r} is a field of every form; choose another id")
        return self


class ConsentModel(_Model):
    text: str = Field(min_length=20)
    topics: list[str] = Field(default_factory=list, description="The newsletter topics this wording asks consent for.")


class PageModel(_Model):
    title: str = Field(min_length=1)
    eyebrow: str = ""
    heading: str = Field(min_length=1)
    lede: str = ""
    receive: list[str] = Field(default_factory=list)
    button: str = "Subscribe"
    note: str = (
        "First we email you a link to confirm your address; nothing else is sent until you open it. "
        "We never share your address."
    )
    # The confirmation page and email say what the person is confirming.
    confirm: str = Field(min_length=1)
    confirmed: str = "Thank you. You're on the list."
    answers_heading: str = "Your answers"
    # The preference page's "Take a break" card: the line above the pause buttons, and the one
    # after "Emails are paused until <date>." Empty: a plain default that fits any list
    # (PAUSE_COPY, or DRIP_PAUSE_COPY when the form joins a drip).
    pause: str = ""
    paused: str = ""


class JoinsModel(_Model):
    drip: str | None = Field(default=None, pattern=_ID)
    topics: list[str] = Field(default_factory=list)


class FormModel(_Model):
    # The form `/subscribe` serves when CADENCE_DEFAULT_FORM is not set and there are several.
    default: bool = False
    page: PageModel
    consent: ConsentModel
    joins: JoinsModel
    questions: list[QuestionModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _structure(self) -> FormModel:
        ids = [q.id for q in self.questions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"questions: duplicate id(s) {', '.join(dupes)}")
        for index, question in enumerate(self.questions):
            if question.counts_if is not None:
                other = next((q for q in self.questions[:index] if q.id == question.counts_if.question), None)
                if other is None:
                    raise ValueError(
                        f"questions.{index}.counts_if.question: no earlier question {question.counts_if.question!r}"
                    )
                if question.counts_if.value not in _values(other):
                    raise ValueError(
                        f"questions.{index}.counts_if.value: {question.counts_if.value!r} is not an answer of "
                        f"{other.id!r} ({', '.join(_values(other))})"
                    )
        if not self.joins.drip and not self.joins.topics:
            raise ValueError("joins: a form must join a drip, newsletter topics, or both")
        unnamed = sorted(set(self.joins.topics) - set(self.consent.topics))
        if unnamed:
            raise ValueError(
                f"consent.topics: the form joins {', '.join(unnamed)} but its consent does not name "
                "it: people must agree to every topic they are put on"
            )
        extra = sorted(set(self.consent.topics) - set(self.joins.topics))
        if extra:
            raise ValueError(f"consent.topics: {', '.join(extra)} is asked for but not in joins.topics")
        return self


def _values(question: QuestionModel) -> list[str]:
    if question.kind == "yes_no":
        return ["yes", "no"]
    return [c.value for c in question.choices]


# ---------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Question:
    id: str
    label: str
    kind: QuestionKind
    attribute: str
    required: bool
    help: str
    error: str
    empty_label: str
    choices: tuple[tuple[str, str], ...]  # (value, label); yes/no for a yes_no question
    counts_if: tuple[str, str] | None

    def accepts(self, value: str) -> bool:
        if not value:
            return not self.required
        if self.kind == "month":
            return MONTH.match(value) is not None
        return value in dict(self.choices)


@dataclass(frozen=True)
class ConsentWording:
    text: str
    version: str
    sha256: str
    topics: tuple[str, ...] = ()


def consent_wording(text: str, topics: tuple[str, ...] = ()) -> ConsentWording:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return ConsentWording(text=text, version=f"signup-v1-{digest[:12]}", sha256=digest, topics=topics)


@dataclass(frozen=True)
class PageCopy:
    title: str
    eyebrow: str
    heading: str
    lede: str
    receive: tuple[str, ...]
    button: str
    note: str
    confirm: str
    confirmed: str
    answers_heading: str
    pause: str = ""
    paused: str = ""


# The preference page's pause copy when the form file says nothing: our own plain words.
PAUSE_COPY = ("Need a break? Pause every email for a few weeks.", "They start again by themselves after that.")
DRIP_PAUSE_COPY = (
    "Need a break? Pause every email for a few weeks; the series waits for you.",
    "The series picks up where it stopped.",
)


@dataclass(frozen=True)
class SignupForm:
    """One validated form file; `name` is its file stem (``/subscribe/<name>``)."""

    name: str
    page: PageCopy
    consent: ConsentWording
    questions: tuple[Question, ...]
    drip: str | None
    topics: tuple[str, ...]
    source: str
    default: bool = False

    def question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)

    def check_answers(self, raw: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(attributes to store, errors by question id) for the form's answers as strings.
        Every question is checked, not only the first. An answer whose ``counts_if`` does not
        hold is stored empty (the race month of someone not training for a race)."""
        errors: dict[str, str] = {}
        given: dict[str, str] = {}
        for question in self.questions:
            value = str(raw.get(question.id) or "").strip()
            if not question.accepts(value):
                errors[question.id] = question.error or f"{question.label} needs an answer from the list."
            given[question.id] = value
        attributes: dict[str, str] = {}
        for question in self.questions:
            value = given[question.id]
            if question.counts_if is not None and given.get(question.counts_if[0]) != question.counts_if[1]:
                value = ""
            attributes[question.attribute] = value
        return attributes, errors

    def stored_answers(self, attributes: Mapping[str, Any]) -> dict[str, str] | None:
        """The answers stored on a subscriber as form values, or None if a required one is
        missing or no longer a valid choice (they never gave valid answers to this form)."""
        values: dict[str, str] = {}
        for question in self.questions:
            raw = attributes.get(question.attribute)
            if question.kind == "yes_no":
                value = "" if raw in (None, "") else ("yes" if is_truthy(raw) else "no")
            else:
                value = str(raw or "")
            if not question.accepts(value):
                if question.required:
                    return None
                value = ""
            values[question.id] = value
        return values


def form_from_data(data: Any, name: str, source: str, text: str = "") -> SignupForm:
    """A :class:`SignupForm` from parsed YAML; CampaignError names file, field and line."""
    if not re.match(_ID, name):
        raise CampaignError(f"{source}: a form's file name is its address /subscribe/<name>: use a-z, 0-9, - and _")
    if not isinstance(data, dict):
        raise CampaignError(f"{source}: expected a mapping at the top level")
    try:
        model = FormModel.model_validate(data)
    except ValidationError as exc:
        lines = []
        lines = [describe_error(err, source, text) for err in exc.errors()]
        raise CampaignError("\n".join(lines)) from None
    questions = tuple(
        Question(
            id=q.id,
            label=q.label,
            kind=q.kind,
            attribute=q.attribute or q.id,
            required=q.required,
            help=q.help,
            error=q.error,
            empty_label=q.empty_label,
            choices=(("yes", "Yes"), ("no", "No"))
            if q.kind == "yes_no"
            else tuple((c.value, c.label) for c in q.choices),
            counts_if=(q.counts_if.question, q.counts_if.value) if q.counts_if else None,
        )
        for q in model.questions
    )
    p = model.page
    pause, paused = DRIP_PAUSE_COPY if model.joins.drip else PAUSE_COPY
    return SignupForm(
        name=name,
        page=PageCopy(
            p.title, p.eyebrow, p.heading, p.lede, tuple(p.receive), p.button, p.note, p.confirm, p.confirmed,
            p.answers_heading, p.pause or pause, p.paused or paused,
        ),
        consent=consent_wording(model.consent.text, tuple(model.consent.topics)),
        questions=questions,
        drip=model.joins.drip,
        topics=tuple(model.joins.topics),
        source=source,
        default=model.default,
    )


_FIELD_FIRST = re.compile(r"^([a-z_][a-z0-9_.]*): (.*)$", re.DOTALL)


def describe_error(err: Any, source: str, text: str) -> str:
    """One pydantic error as ``file:line: field.path: message``. Our own checks (model
    validators) say ``field: message``; that field joins the path, so the line points at it."""
    loc = [str(part) for part in err["loc"]]
    message = str(err["msg"]).removeprefix("Value error, ")
    own = _FIELD_FIRST.match(message)
    if own is not None:
        loc += own.group(1).split(".")
        message = own.group(2)
    line = line_of(text, loc) if text else None
    return f"{source}{f':{line}' if line else ''}: {'.'.join(loc) or '(top level)'}: {message}"


def form_from_text(text: str, name: str, source: str) -> SignupForm:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise CampaignError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return form_from_data(data, name, source, text)


def line_of(text: str, loc: list[str]) -> int | None:
    """The 1-based line of the deepest node of `loc` (``["questions", "0", "choices"]``) that
    exists in the YAML `text`, so an error points where the author has to look."""
    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line
