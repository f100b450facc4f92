"""Load campaign files (YAML) into :class:`cadence.core.campaign.Campaign`, validated by pydantic.

A bad file fails with the file, its line, the field and the reason, e.g.
``campaigns/x.yaml:80: steps.2.delay: '3 days' is not a duration like 2d, 36h, 1d12h or 90m``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator, model_validator

from cadence.core.campaign import (
    Campaign,
    ExitGoal,
    Facet,
    FacetOption,
    Rule,
    RuleOp,
    Segment,
    SendWindow,
    Step,
    Tracking,
)
from cadence.core.segments import compose_segments
from cadence.errors import CampaignError, NotFound
from cadence.files.guide_pages import SAMPLE_BASE_URL, resolve_links

_DURATION = re.compile(r"^\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*$")
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_ID = r"^[a-z0-9][a-z0-9_-]*$"
# The sender's details and topics (cadence.core.sender), beside the campaigns but not one of them.
SENDER_FILE_NAME = "sender.yaml"
# Every combination of facet options is one compiled variant per step: keep the product small.
MAX_COMBINATIONS = 12


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(str(text))
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration like 2d, 36h, 1d12h or 90m")
    weeks, days, hours, minutes = (int(g or 0) for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SenderModel(_Model):
    name: str = Field(min_length=1)
    email: EmailStr


class WindowModel(_Model):
    start: str = "00:00"
    end: str = "23:59"
    weekdays: list[str] = Field(default_factory=lambda: list(_WEEKDAYS))

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        try:
            time.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a time like 07:00") from exc
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[str]) -> list[str]:
        bad = [day for day in value if day.lower()[:3] not in _WEEKDAYS]
        if bad or not value:
            raise ValueError(f"weekdays must be a non-empty list of mon..sun, got {value!r}")
        return value


class RuleModel(_Model):
    attribute: str = Field(min_length=1)
    op: RuleOp  # one list of operators, in the core (core/campaign.py)
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> RuleModel:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op == "within_weeks" and (
            isinstance(self.value, bool) or not isinstance(self.value, int | float) or self.value <= 0
        ):
            raise ValueError(f"op 'within_weeks' needs a number of weeks above 0, got {self.value!r}")
        if self.op not in ("exists", "missing", "truthy", "falsy", "in", "not_in") and self.value is None:
            raise ValueError(f"op {self.op!r} needs a value")
        return self


class SegmentModel(_Model):
    id: str = Field(pattern=_ID)
    name: str
    match: Literal["all", "any"] = "all"
    rules: list[RuleModel] = Field(default_factory=list)
    fallback: bool = False
    context: dict[str, Any] = Field(default_factory=dict)


class FacetOptionModel(_Model):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    match: Literal["all", "any"] = "all"
    rules: list[RuleModel] = Field(default_factory=list)
    fallback: bool = False
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fallback_has_no_rules(self) -> FacetOptionModel:
        if self.fallback and self.rules:
            raise ValueError(f"option {self.id!r}: a fallback option has no rules")
        return self


class FacetModel(_Model):
    id: str = Field(pattern=_ID)
    options: list[FacetOptionModel] = Field(min_length=2)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in ("id", "name"):
            raise ValueError(f"facet id {value!r} is reserved (templates read segment.id and segment.name)")
        return value

    @model_validator(mode="after")
    def _last_is_fallback(self) -> FacetModel:
        if self.options[-1].rules:
            raise ValueError(f"facet {self.id!r}: the last option must be the fallback (fallback: true, no rules)")
        for option in self.options[:-1]:
            if not option.rules:
                message = f"facet {self.id!r}: option {option.id!r} has no rules; only the last may be the fallback"
                raise ValueError(message)
        return self


class StepModel(_Model):
    id: str = Field(pattern=_ID)
    template: str = Field(min_length=1)
    delay: str = "0d"
    after: Literal["previous", "enrollment"] = "previous"

    @field_validator("delay")
    @classmethod
    def _delay(cls, value: str) -> str:
        parse_duration(value)
        return value


class ExitGoalModel(_Model):
    """``exit_goal:`` the conversion that ends the drip early (core/campaign.ExitGoal)."""

    tags: list[str] = Field(default_factory=list)
    rules: list[RuleModel] = Field(default_factory=list)
    match: Literal["all", "any"] = "any"

    @field_validator("tags")
    @classmethod
    def _tag_names(cls, value: list[str]) -> list[str]:
        bad = [tag for tag in value if not tag.strip()]
        if bad:
            raise ValueError("a tag name must not be empty")
        return [tag.strip().lower() for tag in value]  # tags are stored lowercased (subscriber_tools)

    @model_validator(mode="after")
    def _something_to_reach(self) -> ExitGoalModel:
        if not self.tags and not self.rules:
            raise ValueError(
                "give tags (e.g. tags: [booked], set by staff or the booking system) or rules "
                "(e.g. rules: [{attribute: booked, op: truthy}]): an exit goal with neither is never reached"
            )
        return self


class TrackingModel(_Model):
    opens: bool = True
    clicks: bool = True
    utm: dict[str, str] = Field(default_factory=dict)


class CampaignModel(_Model):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    description: str = ""
    sender: SenderModel
    reply_to: EmailStr | None = None
    timezone: str
    send_window: WindowModel = WindowModel()
    context: dict[str, Any] = Field(default_factory=dict)
    tracking: TrackingModel = TrackingModel()
    segments: list[SegmentModel] = Field(default_factory=list)
    facets: list[FacetModel] = Field(default_factory=list)
    steps: list[StepModel] = Field(min_length=1)
    exit_goals: list[str] = Field(default_factory=list)
    exit_goal: ExitGoalModel | None = None

    @field_validator("exit_goal", mode="before")
    @classmethod
    def _goal_is_a_condition(cls, value: Any) -> Any:
        # `exit_goal: booked` is the likeliest slip: say what the mapping looks like.
        if isinstance(value, str | list):
            raise ValueError(
                f"{value!r}: write the goal as a condition, e.g. exit_goal: {{tags: [booked]}} or "
                "exit_goal: {rules: [{attribute: booked, op: truthy}]}"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone such as America/New_York") from exc
        return value

    @model_validator(mode="after")
    def _structure(self) -> CampaignModel:
        options = [o.id for f in self.facets for o in f.options]
        for kind, ids in (
            ("segment", [s.id for s in self.segments]),
            ("step", [s.id for s in self.steps]),
            ("facet", [f.id for f in self.facets]),
            ("facet option", options),
        ):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} id(s): {', '.join(dupes)}")
        if self.segments and self.facets:
            raise ValueError("segments and facets: give one or the other (facets compose the segments)")
        if not self.segments and not self.facets:
            raise ValueError("segments or facets: a campaign needs one of them")
        if self.facets:
            combinations = 1
            for facet in self.facets:
                combinations *= len(facet.options)
            if combinations > MAX_COMBINATIONS:
                raise ValueError(
                    f"facets: {combinations} combinations of options, over {MAX_COMBINATIONS}: every combination "
                    "is compiled for every step, so keep the options few"
                )
            return self
        last = self.segments[-1]
        if not (last.fallback or not last.rules):
            raise ValueError("the last segment must be a fallback (fallback: true, no rules)")
        for seg in self.segments[:-1]:
            if seg.fallback:
                raise ValueError(f"segment {seg.id!r}: only the last segment may be the fallback")
        return self


def line_of(text: str | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc` (pydantic's error location) in `text`, or of
    the deepest part of it that exists (a missing key: its mapping). None without text."""
    if not text:
        return None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = int(node.start_mark.line)
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if child is not None:
                key = next(k for k, v in node.value if v is child)
                line = int(key.start_mark.line)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            line = int(child.start_mark.line)
        if child is None:
            break
        node = child
    return line + 1


def _format_error(source: str, exc: ValidationError, text: str | None = None) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        line = line_of(text, tuple(err["loc"]))
        at = f":{line}" if line is not None else ""  # file:line, as for a YAML syntax error
        lines.append(f"{source}{at}: {where}: {err['msg']}")
    return "\n".join(lines)


def campaign_from_data(data: Any, source: str, text: str | None = None) -> Campaign:
    """The campaign `data` describes; `text` (the file's YAML) lets errors name their line."""
    if not isinstance(data, dict):
        raise CampaignError(f"{source}: expected a mapping at the top level")
    try:
        model = CampaignModel.model_validate(data)
    except ValidationError as exc:
        raise CampaignError(_format_error(source, exc, text)) from None
    window = model.send_window
    facets = tuple(
        Facet(
            id=f.id,
            options=tuple(
                FacetOption(o.id, o.name, tuple(Rule(r.attribute, r.op, r.value) for r in o.rules), o.match, o.context)
                for o in f.options
            ),
        )
        for f in model.facets
    )
    return Campaign(
        id=model.id,
        name=model.name,
        description=model.description,
        sender_name=model.sender.name,
        sender_email=str(model.sender.email),
        reply_to=str(model.reply_to) if model.reply_to else None,
        timezone=model.timezone,
        send_window=SendWindow(
            start=time.fromisoformat(window.start),
            end=time.fromisoformat(window.end),
            weekdays=frozenset(_WEEKDAYS[d.lower()[:3]] for d in window.weekdays),
        ),
        segments=compose_segments(facets)
        if facets
        else tuple(
            Segment(
                id=s.id,
                name=s.name,
                match=s.match,
                fallback=s.fallback or not s.rules,
                rules=tuple(Rule(r.attribute, r.op, r.value) for r in s.rules),
                context=dict(s.context),
            )
            for s in model.segments
        ),
        facets=facets,
        steps=tuple(Step(s.id, s.template, parse_duration(s.delay), s.after) for s in model.steps),
        exit_goals=frozenset(model.exit_goals),
        exit_goal=_exit_goal(model.exit_goal),
        context=dict(model.context),
        tracking=Tracking(model.tracking.opens, model.tracking.clicks, dict(model.tracking.utm)),
        source=source,
    )


def _exit_goal(model: ExitGoalModel | None) -> ExitGoal | None:
    if model is None:
        return None
    rules = tuple(Rule(r.attribute, r.op, r.value) for r in model.rules)
    return ExitGoal(tags=tuple(model.tags), rules=rules, match=model.match)


def read_yaml_file(path: Path, kind: str) -> tuple[str, Any]:
    """The text of a campaign or newsletter file and its YAML, or one line naming the file (and
    the line, where YAML says which) of what is wrong: a missing file is NotFound, bad YAML a
    CampaignError, so `campaigns validate` reports either as one line and exits 1."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"{source}: no such {kind} file") from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise CampaignError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


def load_campaign(
    path: Path, templates_dir: Path | None = None, *, base_url: str | None = None, sender_file: Path | None = None
) -> Campaign:
    """Read and validate one campaign file. With `templates_dir`, step templates must exist.
    ``guide:<page>`` and ``site:/<path>`` links in its context become URLs under `base_url`
    (``CADENCE_BASE_URL`` when sending; by default the sample host the review tools use); see
    :mod:`cadence.files.guide_pages`. The sender's details (`sender_file`, by default ``sender.yaml``
    beside the campaign) become ``context.clinic``; keys the campaign sets itself win."""
    source = str(path)
    text, data = read_yaml_file(path, "campaign")
    campaign = campaign_from_data(data, source, text)
    campaign = _with_sender(campaign, sender_file or path.parent / SENDER_FILE_NAME)
    context, guide_links = resolve_links(
        campaign.context, campaign_id=campaign.id, base_url=base_url or SAMPLE_BASE_URL, source=source
    )
    campaign = replace(campaign, context=context, guide_links=guide_links)
    if templates_dir is not None:
        for index, step in enumerate(campaign.steps):
            if not (templates_dir / step.template).is_file():
                raise CampaignError(
                    f"{source}: steps.{index}.template: no template {step.template!r} in {templates_dir}"
                )
    return campaign


def find_campaign(
    name: str,
    campaigns_dir: Path,
    templates_dir: Path | None = None,
    *,
    base_url: str | None = None,
    sender_file: Path | None = None,
) -> Campaign:
    """Load ``<campaigns_dir>/<name>.yaml`` (or .yml); `name` may also be a path to a file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_campaign(candidate, templates_dir, base_url=base_url, sender_file=sender_file)
    if not re.match(_ID, name) or name == Path(SENDER_FILE_NAME).stem:
        raise NotFound(f"no campaign {name!r}: names are lowercase letters, digits, - and _")
    for suffix in (".yaml", ".yml"):
        path = campaigns_dir / f"{name}{suffix}"
        if path.is_file():
            return load_campaign(path, templates_dir, base_url=base_url, sender_file=sender_file)
    raise NotFound(not_found_message("campaign", name, [p.stem for p in list_campaigns(campaigns_dir)], campaigns_dir))


def not_found_message(kind: str, name: str, names: list[str], folder: Path) -> str:
    """The NotFound message for a campaign or newsletter file: with the closest names and the
    list, as `campaigns status` says it (a misspelt name is the usual reason, the fix one of the
    names shown)."""
    hint = did_you_mean(name, names)
    listing = f" ({kind}s: {', '.join(sorted(names))})" if names else f" (there are no {kind} files)"
    return f"no {kind} {name!r} in {folder}{hint}{listing}"


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the names closest to `name`, or "" (every "no such
    campaign" message says it the same way: this one, `cadence report`'s)."""
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def list_campaigns(campaigns_dir: Path) -> list[Path]:
    """The campaign files of `campaigns_dir` (the sender file beside them is not one)."""
    paths = [*campaigns_dir.glob("*.yaml"), *campaigns_dir.glob("*.yml")]
    return sorted(path for path in paths if path.name != SENDER_FILE_NAME)


def _with_sender(campaign: Campaign, sender_file: Path) -> Campaign:
    """`campaign` with the sender file's details under ``context.clinic`` (issue 12: one copy of
    the name and postal address for every email and page). No file: the campaign as written if
    it carries its own postal address (an old checkout compared by ``campaigns diff``), else an
    error, so the campaign is held and says why instead of failing every email at render time."""
    from cadence.core.sender import sender_from_text

    try:
        text = sender_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        own = campaign.context.get("clinic")
        if isinstance(own, dict) and own.get("postal_address"):
            return campaign
        raise CampaignError(
            f"{sender_file}: no sender file: it holds the clinic's name and postal address, which every "
            "email must carry (CAN-SPAM); set CADENCE_SENDER_FILE or add campaigns/sender.yaml"
        ) from None
    sender = sender_from_text(text, str(sender_file))
    own = campaign.context.get("clinic")
    clinic = {**sender.clinic(), **(own if isinstance(own, dict) else {})}
    return replace(campaign, context={**campaign.context, "clinic": clinic})
