"""The newsletter model: a one-off send to an audience at a send time (issue 13).

Pure: no I/O, every instant is an argument. Reading the files is :mod:`cadence.files.newsletters`;
the states, audience and send-time rules that every door and the send path share live here, so
"who gets it", "when" and "what may happen next" are each decided in one place.

A newsletter file (``campaigns/newsletters/<id>.yaml``)::

    kind: newsletter
    id: clinic-news-2027-01
    based_on: lower-back-pain        # sender, clinic details, links and tracking come from this drip
    subject: Hills, hips and your low back
    preheader: Why climbs find a weak spot ...
    body: |                          # Markdown in the newsletter layout ...
      ...
    template: newsletters/...mjml    # ... or an MJML template of its own (one of the two)
    audience:
      topics: [clinic-news]          # people who asked for these newsletters
      segments: {campaign: lower-back-pain, include: [trail+race-soon]}
      match: all
      rules: [{attribute: terrain, op: eq, value: trails}]   # the segment rule language
      tags: [vip]
    send_at: "2027-01-12 09:00 local"   # or an instant with its offset: 2027-01-12T09:00:00-05:00
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cadence.core.campaign import Rule, RuleOp, Segment
from cadence.core.segments import choose_segment, rule_matches
from cadence.errors import AlreadyDone, CampaignError, InputError

__all__ = [
    "STATES",
    "Audience",
    "Newsletter",
    "SendTime",
    "effective_state",
    "in_audience",
    "issue_label",
    "newsletter_from_data",
    "newsletter_problems",
    "parse_send_time",
    "send_instant",
    "skip_reason",
    "transition",
]

_ID = r"^[a-z0-9][a-z0-9_-]*$"
_LOCAL = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})[ T](\d{1,2}:\d{2})\s+local\s*$", re.IGNORECASE)

State = Literal["draft", "scheduled", "sending", "sent", "paused", "cancelled"]
STATES: tuple[State, ...] = ("draft", "scheduled", "sending", "sent", "paused", "cancelled")

# What each staff action may start from, and where it leads. "sending" and "sent" are reached by
# the send path and by the ledger (see effective_state), never by a command.
_TRANSITIONS: dict[str, tuple[frozenset[str], State]] = {
    "schedule": (frozenset({"draft", "scheduled"}), "scheduled"),
    "pause": (frozenset({"scheduled", "sending"}), "paused"),
    "resume": (frozenset({"paused"}), "scheduled"),
    "cancel": (frozenset({"draft", "scheduled", "sending", "paused"}), "cancelled"),
}


@dataclass(frozen=True, slots=True)
class SendTime:
    """When a newsletter goes out: one instant for everyone, or a wall-clock time on a day in
    each subscriber's own time zone (``local``)."""

    instant: datetime | None = None
    local_day: date | None = None
    local_time: time | None = None

    def __str__(self) -> str:
        if self.local_day is not None and self.local_time is not None:
            return f"{self.local_day.isoformat()} {self.local_time:%H:%M} local"
        return self.instant.isoformat() if self.instant is not None else "now"


@dataclass(frozen=True, slots=True)
class Audience:
    """Who a newsletter goes to. Every part given must hold (topics: any of them; tags: any of
    them; segments: one of them; rules: as `match` says). Everyone must also be confirmed, not
    unsubscribed and not suppressed: that is checked by whoever reads the subscribers."""

    topics: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    segments_campaign: str | None = None
    segments: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    match: Literal["all", "any"] = "all"


@dataclass(frozen=True, slots=True)
class Newsletter:
    id: str
    based_on: str
    subject: str | None
    preheader: str | None
    body: str | None  # Markdown
    template: str | None  # an MJML template path under templates/
    audience: Audience
    send_time: SendTime
    issue_date: str | None = None
    timezone: str | None = None  # for subscribers without one; default: the based_on campaign's
    cta_url: str | None = None
    cta_label: str | None = None
    name: str = ""
    source: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    draft_version: int | None = None  # a stored draft's version (core/newsletter_draft.py); None: a file
    # False when the file or draft names no send_at: scheduling then needs a time (--at), so that
    # forgetting one never sends at once (a marketer's trial: "schedule" sent a draft immediately).
    send_time_given: bool = True


# ---------------------------------------------------------------------------- validation


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RuleModel(_Model):
    attribute: str = Field(min_length=1)
    op: RuleOp
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> _RuleModel:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op not in ("exists", "missing", "truthy", "falsy", "in", "not_in") and self.value is None:
            raise ValueError(f"op {self.op!r} needs a value")
        return self


class _SegmentsModel(_Model):
    campaign: str = Field(pattern=_ID)
    include: list[str] = Field(min_length=1)


class _AudienceModel(_Model):
    topics: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    segments: _SegmentsModel | None = None
    match: Literal["all", "any"] = "all"
    rules: list[_RuleModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _someone_chosen(self) -> _AudienceModel:
        if not self.topics and not self.tags:
            # A newsletter goes to people who asked for it (a topic) or whom staff chose (a tag),
            # never to "everyone on file": that is how a drip list becomes spam.
            raise ValueError("give topics (people who asked for this newsletter) or tags (people staff chose)")
        return self


class _CtaModel(_Model):
    url: str = Field(pattern=r"^https://")
    label: str = Field(min_length=1, max_length=60)


class _NewsletterModel(_Model):
    kind: Literal["newsletter"]
    id: str = Field(pattern=_ID, max_length=100)
    name: str = ""
    based_on: str = Field(pattern=_ID)
    subject: str | None = Field(default=None, min_length=1, max_length=120)
    preheader: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1)
    template: str | None = Field(default=None, min_length=1)
    issue_date: str | None = None
    timezone: str | None = None
    cta: _CtaModel | None = None
    audience: _AudienceModel
    send_at: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            _zone_or_error(value)
        return value

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_send_time(value)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _one_body(self) -> _NewsletterModel:
        if (self.body is None) == (self.template is None):
            raise ValueError("give either body (Markdown) or template (an MJML file), not both")
        if self.body is not None and (self.subject is None or self.preheader is None):
            raise ValueError("a Markdown body needs a subject and a preheader")
        return self


def _zone_or_error(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone such as America/New_York") from None


# What to write, for the fields whose shape a marketer cannot guess from pydantic's own words
# ("Field required", "Input should be a valid dictionary or instance of _SegmentsModel" names a
# class of ours, not what goes in the file).
_FIELD_HINTS = {
    "based_on": "the drip whose sender, clinic details, segments and tracking it uses, e.g. based_on: lower-back-pain",
    "audience": "who gets it, e.g. audience: {topics: [clinic-news]}",
    "audience.segments": (
        "a drip and its segment ids, e.g. segments: {campaign: lower-back-pain, include: [trail+race, everyday+race]}"
    ),
    "cta": "a button, e.g. cta: {url: https://..., label: Book a visit}",
}


def _message(where: str, err: Any) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    hint = _FIELD_HINTS.get(where)
    if err["type"] == "missing":
        return f"required: {hint}" if hint else "required"
    if err["type"] == "model_type":
        return f"expected {hint}" if hint else "expected a mapping (name: value lines)"
    return message


def _validated(data: Any) -> tuple[_NewsletterModel | None, list[tuple[str, str]]]:
    try:
        return _NewsletterModel.model_validate(data), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "(top level)"
            problems.append((where, _message(where, err)))
        return None, problems


def newsletter_problems(data: Any) -> list[tuple[str, str]]:
    """Every (field, message) wrong in a newsletter's data, as a file would be checked
    (``("audience.rules.0.op", "Input should be 'eq', ...")``); empty: it is valid. For doors
    that show each error beside its field (the staff API, the console's composer)."""
    if not isinstance(data, dict):
        return [("(top level)", "expected a mapping")]
    return _validated(data)[1]


def newsletter_from_data(data: Any, source: str) -> Newsletter:
    """Validate a parsed newsletter file. A CampaignError names the file and every bad field:
    ``campaigns/newsletters/x.yaml: audience.topics: ...``."""
    if not isinstance(data, dict):
        raise CampaignError(f"{source}: expected a mapping at the top level")
    model, problems = _validated(data)
    if model is None:
        raise CampaignError("\n".join(f"{source}: {where}: {message}" for where, message in problems))
    audience = model.audience
    return Newsletter(
        id=model.id,
        name=model.name or model.subject or model.id,
        based_on=model.based_on,
        subject=model.subject,
        preheader=model.preheader,
        body=model.body,
        template=model.template,
        audience=Audience(
            topics=tuple(audience.topics),
            tags=tuple(audience.tags),
            segments_campaign=audience.segments.campaign if audience.segments else None,
            segments=tuple(audience.segments.include) if audience.segments else (),
            rules=tuple(Rule(r.attribute, r.op, r.value) for r in audience.rules),
            match=audience.match,
        ),
        send_time=parse_send_time(model.send_at) if model.send_at else SendTime(),
        send_time_given=bool(model.send_at),
        issue_date=model.issue_date,
        timezone=model.timezone,
        cta_url=model.cta.url if model.cta else None,
        cta_label=model.cta.label if model.cta else None,
        source=source,
        context=dict(model.context),
    )


# ---------------------------------------------------------------------------- send time


def parse_send_time(text: str, what: str = "send_at") -> SendTime:
    """``2027-01-12T09:00:00-05:00`` (an instant: the offset is required, so nobody guesses the
    zone), ``2027-01-12 09:00 local`` (09:00 in each subscriber's zone) or ``now``."""
    text = str(text).strip()
    if text.lower() == "now":
        return SendTime()
    match = _LOCAL.match(text)
    if match:
        try:
            return SendTime(
                local_day=date.fromisoformat(match.group(1)), local_time=time.fromisoformat(match.group(2).zfill(5))
            )
        except ValueError:
            raise InputError(f"{what}: {text!r} is not a real day and time") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InputError(
            f"{what}: {text!r} is not a send time: write an instant with its offset "
            "(2027-01-12T09:00:00-05:00), a local time (2027-01-12 09:00 local) or now"
        )
    return SendTime(instant=moment.astimezone(UTC))


def send_instant(send_time: SendTime, subscriber_tz: str | None, default_tz: str, scheduled_at: datetime) -> datetime:
    """When one subscriber's copy is due (UTC). A local time is read in the subscriber's zone
    (the default zone when they have none or an unknown one); a wall time that does not exist
    that day (spring forward) is read with the offset before the gap, an ambiguous one as its
    first occurrence (PEP 495 ``fold=0``), as core/schedule.py does for drips. ``now`` means
    `scheduled_at`."""
    if send_time.instant is not None:
        return send_time.instant
    if send_time.local_day is None or send_time.local_time is None:
        return scheduled_at
    try:
        zone = ZoneInfo(subscriber_tz) if subscriber_tz else ZoneInfo(default_tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(default_tz)
    local = datetime.combine(send_time.local_day, send_time.local_time).replace(tzinfo=zone, fold=0)
    return local.astimezone(UTC)


def issue_label(send_time: SendTime, scheduled_at: datetime) -> str:
    """The masthead's month ("January 2027") when the file does not give ``issue_date``."""
    day = send_time.local_day or (send_time.instant or scheduled_at).date()
    return f"{day:%B %Y}"


# ---------------------------------------------------------------------------- audience


def in_audience(
    audience: Audience,
    *,
    attributes: Mapping[str, Any],
    topics: Collection[str],
    tags: Collection[str],
    segments: Sequence[Segment] = (),
    today: date | None = None,
) -> Segment | Literal[False] | None:
    """Whether a (confirmed, not suppressed) subscriber is in `audience`: False if not; else the
    segment of `segments` they fall in (for the per-segment counts), or None without segments.

    `segments` are the drip's segments the audience names (``segments.campaign``) or the segments
    of the campaign the newsletter is based on (for counting only)."""
    if audience.topics and not set(audience.topics) & set(topics):
        return False
    if audience.tags and not set(audience.tags) & set(tags):
        return False
    if audience.rules:
        results = (rule_matches(rule, attributes, today) for rule in audience.rules)
        if not (all(results) if audience.match == "all" else any(results)):
            return False
    segment = choose_segment(segments, attributes, today) if segments else None
    if audience.segments and (segment is None or segment.id not in audience.segments):
        return False
    return segment


# ---------------------------------------------------------------------------- states


def transition(current: str, action: str, newsletter_id: str) -> State:
    """The state `action` leads to from `current`, or an InputError saying why not."""
    allowed, target = _TRANSITIONS[action]
    if action == "pause" and current == "paused":
        raise AlreadyDone(f"newsletter {newsletter_id!r} was already paused")
    if action == "resume" and current in ("scheduled", "sending"):
        raise AlreadyDone(f"newsletter {newsletter_id!r} was not paused (it is {current})")
    if current not in allowed:
        raise InputError(
            f"newsletter {newsletter_id!r} is {current}: it cannot be {action}d"
            + (" (only a paused newsletter can be resumed)" if action == "resume" else "")
        )
    return target


def effective_state(stored: str, *, pending: int, finished: int) -> State:
    """The state to show and store: a scheduled newsletter whose first copies went out is
    ``sending``; one with nothing left queued or in flight is ``sent``. `pending` counts ledger
    rows queued, held or in flight; `finished` the sent, failed and skipped ones."""
    if stored in ("scheduled", "sending"):
        if finished and not pending:
            return "sent"
        if finished:
            return "sending"
    return stored  # type: ignore[return-value]


def skip_reason(
    *,
    newsletter_state: str,
    subscriber_status: str,
    suppressed: bool,
    topics_wanted: Collection[str],
    topics_held: Collection[str],
) -> str:
    """Why a newsletter copy must not go out *now* (empty: send it). Checked at send time, so
    an unsubscribe, a bounce, a suppression or a withdrawn topic after scheduling is honoured."""
    if newsletter_state == "cancelled":
        return "newsletter cancelled"
    if subscriber_status != "active":
        return f"subscriber {subscriber_status}"
    if suppressed:
        return "address suppressed"
    if topics_wanted and not set(topics_wanted) & set(topics_held):
        return "no longer subscribed to the newsletter's topic"
    return ""
