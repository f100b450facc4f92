"""The composer's form and a newsletter document, both ways (issue 14).

A stored draft's ``document`` has the shape of a newsletter file (core/newsletter.py: subject,
preheader, Markdown body, audience, send_at...). The composer's form is flat HTML controls: one
value per name, except the ticked topics and segments and the repeated attribute-filter rows.
This module only translates between the two; whether a document is valid, who it reaches and
what it looks like are the drafts operations' to say.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.datastructures import FormData

Fields = dict[str, list[str]]

RULE_ROWS = 3  # empty rows offered for attribute filters; a saved draft with more shows them all
# The segment rule language (core/campaign.RuleOp) in words staff read.
OPS = (
    ("eq", "is"),
    ("ne", "is not"),
    ("in", "is one of (comma-separated)"),
    ("not_in", "is none of (comma-separated)"),
    ("contains", "contains"),
    ("exists", "is given"),
    ("missing", "is not given"),
    ("truthy", "is yes"),
    ("falsy", "is no or empty"),
    ("gt", "is more than"),
    ("gte", "is at least"),
    ("lt", "is less than"),
    ("lte", "is at most"),
    ("within_weeks", "is a month within N weeks"),
)
_NO_VALUE = {"exists", "missing", "truthy", "falsy"}
_LISTS = {"in", "not_in"}
_NUMBERS = {"gt", "gte", "lt", "lte", "within_weeks"}


def fields_of(form: FormData) -> Fields:
    """Every posted control as a list of strings (files, which the composer never posts, dropped)."""
    out: Fields = {}
    for name, value in form.multi_items():
        if isinstance(value, str) and len(name) <= 100:
            # Never cut: too long a text is the operation's to refuse, by name, with the text kept.
            out.setdefault(name, []).append(value)
    return out


def one(fields: Mapping[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0].strip()


# The fields the composer shows and edits; others a draft may have (name, issue_date, timezone,
# cta: set through the staff API) are carried over unchanged by a save (see `merged`).
FORM_FIELDS = frozenset({"based_on", "subject", "preheader", "body", "audience", "send_at"})


def document_from_fields(fields: Mapping[str, list[str]], default_based_on: str) -> dict[str, Any]:
    """The newsletter document the form describes (a file's fields less ``kind`` and ``id``:
    a draft's name is given apart). Empty controls are left out, so the validation names what
    is missing rather than a blank it was given."""
    based_on = one(fields, "based_on") or default_based_on
    doc: dict[str, Any] = {"based_on": based_on}
    for name in ("subject", "preheader"):
        if one(fields, name):
            doc[name] = one(fields, name)
    body = (fields.get("body") or [""])[0].replace("\r\n", "\n")
    if body.strip():
        doc["body"] = body
    audience: dict[str, Any] = {}
    topics = [t for t in fields.get("topics", []) if t]
    tags = [t.strip() for t in one(fields, "tags").split(",") if t.strip()]
    if topics:
        audience["topics"] = topics
    if tags:
        audience["tags"] = tags
    segments = [s for s in fields.get("segments", []) if s]
    if segments:
        audience["segments"] = {"campaign": based_on, "include": segments}
    rules = _rules(fields)
    if rules:
        audience["rules"] = rules
        audience["match"] = "any" if one(fields, "match") == "any" else "all"
    doc["audience"] = audience
    send_at = _send_at(fields)
    if send_at:
        doc["send_at"] = send_at
    return doc


def _rules(fields: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    names, ops, values = (fields.get(k, []) for k in ("rule_attribute", "rule_op", "rule_value"))
    rules = []
    for i, attribute in enumerate(names):
        attribute = attribute.strip()
        if not attribute:
            continue
        op = ops[i] if i < len(ops) else "eq"
        raw = values[i].strip() if i < len(values) else ""
        rule: dict[str, Any] = {"attribute": attribute, "op": op}
        if op in _LISTS:
            rule["value"] = [v.strip() for v in raw.split(",") if v.strip()]
        elif op in _NUMBERS:
            rule["value"] = _number(raw)
        elif op not in _NO_VALUE:
            rule["value"] = raw
        rules.append(rule)
    return rules


def _number(raw: str) -> Any:
    # A number where the rule compares numbers; otherwise the text as typed, for the
    # validation to name ("within_weeks needs a number"), not a silent zero.
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _send_at(fields: Mapping[str, list[str]]) -> str:
    mode = one(fields, "send_mode")
    if mode == "now":
        return "now"
    if mode == "local" and one(fields, "send_local"):
        return one(fields, "send_local").replace("T", " ") + " local"
    if mode == "instant" and one(fields, "send_instant"):
        # <input type=datetime-local> has no zone; the form names one, and the document stores
        # the instant with its offset (core/newsletter.parse_send_time wants no guessing).
        typed = one(fields, "send_instant")
        try:
            zone = ZoneInfo(one(fields, "send_zone") or "UTC")
            return datetime.fromisoformat(typed).replace(tzinfo=zone).isoformat()
        except (ValueError, ZoneInfoNotFoundError):
            return f"{typed} in {one(fields, 'send_zone')}"  # refused by the validation, by name
    return ""


def merged(stored: Mapping[str, Any] | None, edited: Mapping[str, Any]) -> dict[str, Any]:
    """`edited` (from the form) over the stored fields the form does not show. An update
    replaces every field, so without this a save from the composer would drop them."""
    kept = {k: v for k, v in (stored or {}).items() if k not in FORM_FIELDS}
    return {**kept, **edited}


def fields_from_document(doc: Mapping[str, Any]) -> Fields:
    """The form showing a stored document."""
    fields: Fields = {name: [str(doc.get(name) or "")] for name in ("based_on", "subject", "preheader", "body")}
    audience = doc.get("audience") or {}
    fields["topics"] = [str(t) for t in audience.get("topics") or []]
    fields["tags"] = [", ".join(str(t) for t in audience.get("tags") or [])]
    fields["segments"] = [str(s) for s in (audience.get("segments") or {}).get("include") or []]
    fields["match"] = [str(audience.get("match") or "all")]
    rules = audience.get("rules") or []
    fields["rule_attribute"] = [str(r.get("attribute", "")) for r in rules]
    fields["rule_op"] = [str(r.get("op", "eq")) for r in rules]
    fields["rule_value"] = [_shown(r.get("value")) for r in rules]
    send_at = str(doc.get("send_at") or "")
    if send_at.lower() == "now":
        fields["send_mode"] = ["now"]
    elif send_at.endswith(" local"):
        fields["send_mode"], fields["send_local"] = ["local"], [send_at.removesuffix(" local").replace(" ", "T")]
    elif send_at:
        try:
            # An instant keeps only its offset, not the zone it was typed in: shown in UTC.
            moment = datetime.fromisoformat(send_at).astimezone(UTC)
            fields["send_mode"] = ["instant"]
            fields["send_instant"] = [moment.strftime("%Y-%m-%dT%H:%M")]
            fields["send_zone"] = ["UTC"]
        except ValueError:
            pass
    return fields


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def rule_rows(fields: Mapping[str, list[str]]) -> int:
    """Rows for the filters given and one more (the same count for posted and stored fields,
    so composer.js sees the same form after a save)."""
    given = [name for name in fields.get("rule_attribute", []) if name.strip()]
    return max(RULE_ROWS, len(given) + 1)


def send_time_chosen(fields: Mapping[str, list[str]]) -> bool:
    """The form names a send time: "now", or a mode with its date and time filled in."""
    return bool(_send_at(fields))
