"""Stored newsletters (drafts written through the API or the console's composer), the pure part.

A stored draft has the fields a newsletter file has (core/newsletter.py), less ``kind``, ``id``
(its name, given apart) and ``template`` (a stored newsletter is written in Markdown: an MJML
file is a developer's tool, and a path on the server is not something to let an API set). It
is validated by the file's own model, so an error names the same field a file's would
(``audience.rules.0.op``), plus the checks only a stored text needs (its size, one-line
headers). The same model means a stored draft, once valid, becomes the very
:class:`~cadence.core.newsletter.Newsletter` a file becomes, and is scheduled, locked and sent by
the same code.

The refusals an editor meets each have an exception here, all :class:`~cadence.errors.InputError`
(a door answers 422 unless it knows better: 409 for a conflict or a taken name, 423 for a lock)::

    InputError
    ├── DraftInvalid       fields are wrong; .problems lists (field, message) pairs
    ├── VersionConflict    saved by someone else since; .current_version
    ├── DraftLocked        scheduled or sending: read-only; .state
    └── NameTaken          a file newsletter, a drip or another draft has the name
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cadence.core.newsletter import Newsletter, newsletter_from_data, newsletter_problems
from cadence.errors import CampaignError, InputError

__all__ = [
    "EDITABLE_FIELDS",
    "MAX_BODY_CHARS",
    "RESERVED_IDS",
    "DraftInvalid",
    "DraftLocked",
    "FieldProblem",
    "NameTaken",
    "VersionConflict",
    "draft_document",
    "draft_newsletter",
    "draft_problems",
    "id_problems",
    "sketch_newsletter",
]

EDITABLE_FIELDS = (
    "name",
    "based_on",
    "subject",
    "preheader",
    "body",
    "audience",
    "send_at",
    "issue_date",
    "timezone",
    "cta",
)
MAX_BODY_CHARS = 100_000  # about 15,000 words: a newsletter, not a book; bounds what is stored per version
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# /api/admin/newsletters/drafts lists the stored newsletters: one named "drafts" could not be
# reached at /api/admin/newsletters/{name} (web/staff_api_drafts.py).
RESERVED_IDS = frozenset({"drafts"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What a preview or a live count shows for a field not written yet (or not valid yet).
_PLACEHOLDERS: dict[str, Any] = {
    "subject": "(no subject yet)",
    "preheader": "(no preheader yet)",
    "body": "*(no text yet)*",
    "audience": {"topics": ["(none yet)"]},
}


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One wrong field: ``field`` is a dotted path into the document (``audience.rules.0.op``),
    ``(top level)`` for a rule between fields."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class DraftInvalid(InputError):
    """The draft's fields are wrong; nothing was saved. ``problems`` names each field."""

    def __init__(self, problems: Iterable[FieldProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "the newsletter is not valid")


class VersionConflict(InputError):
    """An update based on an old version: someone saved since. Nothing was overwritten."""

    def __init__(self, newsletter_id: str, expected: int, current: int) -> None:
        self.newsletter_id, self.expected_version, self.current_version = newsletter_id, expected, current
        super().__init__(
            f"version: newsletter {newsletter_id!r} is at version {current}, not {expected} "
            f"(someone saved it meanwhile): load version {current}, make your change again, and save"
        )


class DraftLocked(InputError):
    """The newsletter was scheduled (or is sending, sent, paused, cancelled): its text is the
    version locked then and cannot change."""

    def __init__(self, newsletter_id: str, state: str) -> None:
        self.newsletter_id, self.state = newsletter_id, state
        super().__init__(
            f"newsletter {newsletter_id!r} is {state}: its text was locked when it was scheduled and "
            "cannot be changed or deleted; to send a different text, write a new newsletter"
        )


class NameTaken(InputError):
    """Another newsletter (a file, a stored one) or a drip campaign has this name."""


def id_problems(newsletter_id: str) -> list[FieldProblem]:
    """What is wrong with a new newsletter's name (it becomes the ledger's campaign id)."""
    if not isinstance(newsletter_id, str) or not _ID.match(newsletter_id) or len(newsletter_id) > 100:
        return [FieldProblem("id", "use 1 to 100 lowercase letters, digits, - and _, starting with a letter or digit")]
    if newsletter_id in RESERVED_IDS:
        return [FieldProblem("id", f"{newsletter_id!r} is reserved (the staff API's own path); choose another")]
    return []


def draft_document(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The document stored for `fields`: the editable fields given, in a stable order, without
    the ones left empty (None). Unknown fields are kept, so validation can name them."""
    document = {key: fields[key] for key in EDITABLE_FIELDS if fields.get(key) is not None}
    document.update({key: value for key, value in fields.items() if key not in EDITABLE_FIELDS})
    return document


def draft_problems(newsletter_id: str, document: Mapping[str, Any]) -> list[FieldProblem]:
    """Every problem of a draft, each naming its field; empty: it can be saved."""
    problems = id_problems(newsletter_id)
    if "template" in document:
        problems.append(FieldProblem("template", "a stored newsletter is written in Markdown: use body"))
    body = document.get("body")
    if body is None:
        problems.append(FieldProblem("body", "write the newsletter's text (Markdown)"))
    elif isinstance(body, str):
        if len(body) > MAX_BODY_CHARS:
            problems.append(FieldProblem("body", f"at most {MAX_BODY_CHARS:,} characters (this is {len(body):,})"))
        if _CONTROL.search(body):
            problems.append(FieldProblem("body", "contains control characters (pasted from a binary file?)"))
        if "{% endraw %}" in body:
            # The locked version wraps the text in a raw block (newsletter_content.lock).
            problems.append(FieldProblem("body", "cannot contain '{% endraw %}'"))
    for key in ("subject", "preheader", "name"):
        value = document.get(key)
        if isinstance(value, str) and ("\n" in value or "\r" in value):
            problems.append(FieldProblem(key, "one line only"))  # a subject is a header (RFC 5322 §2.2)
    data = {**{k: v for k, v in document.items() if k != "template"}, "kind": "newsletter", "id": "draft"}
    seen = {(p.field, p.message) for p in problems}
    for where, message in newsletter_problems(data):
        if where == "body" and body is None:
            continue
        if (where, message) not in seen:
            problems.append(FieldProblem(where, message))
    return problems


def draft_newsletter(newsletter_id: str, document: Mapping[str, Any], *, version: int | None = None) -> Newsletter:
    """The newsletter a (valid) stored draft is; DraftInvalid if it is not valid."""
    problems = draft_problems(newsletter_id, document)
    if problems:
        raise DraftInvalid(problems)
    data = {**document, "kind": "newsletter", "id": newsletter_id}
    try:
        newsletter = newsletter_from_data(data, f"newsletter {newsletter_id}")
    except CampaignError as exc:  # draft_problems found nothing, so this is not expected
        raise DraftInvalid([FieldProblem("(top level)", str(exc))]) from None
    return replace(newsletter, draft_version=version)


def sketch_newsletter(newsletter_id: str, fields: Mapping[str, Any]) -> tuple[Newsletter, list[FieldProblem]]:
    """A newsletter to preview or count while it is being written: fields not written yet, or
    not valid yet, are replaced by placeholders; the problems found are returned beside it. Only
    an unusable ``based_on`` (nothing to take the sender and layout from) or name raises
    DraftInvalid."""
    document = {k: v for k, v in draft_document(fields).items() if k in EDITABLE_FIELDS}
    problems = draft_problems(newsletter_id, document)
    fixed = {**_PLACEHOLDERS, **document}
    for problem in problems:
        top = problem.field.split(".", 1)[0]
        if top in ("based_on", "id"):
            raise DraftInvalid([p for p in problems if p.field.split(".", 1)[0] in ("based_on", "id")])
        if top in _PLACEHOLDERS:
            fixed[top] = _PLACEHOLDERS[top]
        elif top in fixed:
            del fixed[top]
    try:
        return draft_newsletter(newsletter_id, fixed), problems
    except DraftInvalid as exc:
        raise DraftInvalid([*problems, *exc.problems]) from None
