"""Newsletters written through the API or the console's composer: stored, versioned drafts
(issue 13 item 1). Every door (staff API, console, CLI) calls these.

A stored draft is the same newsletter a file is (core/newsletter_draft.py turns one into the
other's model), so once it is scheduled it goes through :mod:`cadence.operations.newsletters`
unchanged: the same checks, the same locked version, the same ledger rows and states, the same
exactly-once send path. What is new here is the editing:

- **Versions.** Each save makes version n+1 and keeps every version (``history``). An update
  names the version it was based on (`expected_version`); if someone saved since, it is refused
  with :class:`VersionConflict` and nothing is overwritten.
- **Lock.** Once scheduled, the draft is read-only (:class:`DraftLocked`): what goes out is the
  version locked then (newsletter_content.lock), and a text that changed under it would be a
  lie in the history.
- **Half-written drafts may be saved.** Fields not written yet (subject, preheader, body,
  audience) may be missing; fields given must be valid (:class:`DraftInvalid` names each one).
  Scheduling or a test send needs them all and names the missing ones.
- **Live preview and counts** take the fields *unsaved* (a composer's form as it is), fill what
  is missing with placeholders, and write nothing.

Each change is audit-logged as `actor` in its own transaction. Names are shared with newsletter
files and drip campaigns (the ledger's ``campaign_id``): a taken name is :class:`NameTaken`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jinja2 import FileSystemLoader
from sqlalchemy.orm import Session

from cadence.config import Settings
from cadence.core.campaign import Campaign
from cadence.core.message import Address
from cadence.core.newsletter import Newsletter, effective_state
from cadence.core.newsletter_content import EVERYONE, newsletter_loader, render_campaign
from cadence.core.newsletter_draft import (
    DraftInvalid,
    DraftLocked,
    FieldProblem,
    NameTaken,
    VersionConflict,
    draft_document,
    draft_newsletter,
    draft_problems,
    sketch_newsletter,
)
from cadence.core.render import Renderer
from cadence.core.subscriber_fields import email_key
from cadence.db import console as console_store
from cadence.db import newsletter_drafts as drafts_store
from cadence.db import newsletters as newsletter_store
from cadence.db.audit import record_audit
from cadence.db.draft_models import NewsletterDraft, NewsletterDraftVersion
from cadence.db.enrollments import subscriber_by_email_key
from cadence.db.session import transaction
from cadence.errors import CampaignError, InputError, NotFound
from cadence.files.newsletters import NEWSLETTERS_FOLDER, referenced_campaigns
from cadence.operations import newsletters
from cadence.operations.newsletter_copies import build_copy
from cadence.operations.runtime import Runtime
from cadence.review.previews import DEFAULT_SAMPLE_SUBSCRIBERS, validate_campaign

__all__ = [
    "DraftInvalid",
    "DraftLocked",
    "DraftPreview",
    "DraftVersion",
    "FieldProblem",
    "NameTaken",
    "StoredDraft",
    "VersionConflict",
    "audience_counts",
    "create",
    "delete",
    "get",
    "history",
    "list_drafts",
    "preview",
    "schedule",
    "send_test",
    "update",
]

PREVIEW_ID = "preview"  # the name a preview of an unsaved, unnamed newsletter is rendered under
_PLACEHOLDER_FIELDS = ("subject", "preheader", "body", "audience")  # may be missing in a saved draft


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StoredDraft:
    """A stored newsletter as an editor sees it."""

    id: str
    version: int
    state: str  # draft, scheduled, sending, sent, paused, cancelled (core/newsletter.STATES)
    fields: dict[str, Any]  # name, based_on, subject, preheader, body, audience, send_at, ...
    missing: tuple[FieldProblem, ...]  # what still stops scheduling (empty: ready)
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str

    @property
    def locked(self) -> bool:
        """Scheduled or later: read-only."""
        return self.state != "draft"

    def document(self) -> dict[str, Any]:
        """JSON-ready (the staff API's answer)."""
        return {
            "id": self.id,
            "version": self.version,
            "state": self.state,
            "locked": self.locked,
            "ready": not self.missing,
            "missing": [{"field": p.field, "message": p.message} for p in self.missing],
            "fields": self.fields,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class DraftVersion:
    """One saved version of a draft (its history)."""

    version: int
    fields: dict[str, Any]
    saved_at: datetime
    saved_by: str

    def document(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "fields": self.fields,
            "saved_at": self.saved_at.isoformat(),
            "saved_by": self.saved_by,
        }


@dataclass(frozen=True)
class DraftPreview:
    """A newsletter rendered for a composer: as a sample reader would get it."""

    subject: str
    preheader: str
    html: str  # the whole email, in the newsletter layout; links point at the neutral /manage page
    text: str
    problems: tuple[FieldProblem, ...] = ()  # fields missing or not valid (placeholders shown instead)
    checks: tuple[str, ...] = field(default=())  # the drips' email checks (links, postal address...), if asked

    def document(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "preheader": self.preheader,
            "html": self.html,
            "text": self.text,
            "problems": [{"field": p.field, "message": p.message} for p in self.problems],
            "checks": list(self.checks),
        }


# ---------------------------------------------------------------------------- reads


def get(settings: Settings, newsletter_id: str) -> StoredDraft:
    """The stored newsletter `newsletter_id` (its current version). NotFound if none."""
    with transaction(settings.database_url) as session:
        row = drafts_store.draft(session, newsletter_id)
        if row is None:
            raise NotFound(f"no stored newsletter {newsletter_id!r}")
        return _stored(row, _states(session, [row.id]).get(row.id, "draft"))


def list_drafts(settings: Settings) -> list[StoredDraft]:
    """Every stored newsletter, by name, each with its state (files are not listed here:
    :func:`cadence.operations.newsletters.list_all` lists both)."""
    with transaction(settings.database_url) as session:
        rows = drafts_store.all_drafts(session)
        states = _states(session, [row.id for row in rows])
        return [_stored(row, states.get(row.id, "draft")) for row in rows]


def history(settings: Settings, newsletter_id: str) -> list[DraftVersion]:
    """Every saved version, newest first. NotFound if there is no such stored newsletter."""
    with transaction(settings.database_url) as session:
        if drafts_store.draft(session, newsletter_id) is None:
            raise NotFound(f"no stored newsletter {newsletter_id!r}")
        return [_version(row) for row in drafts_store.draft_history(session, newsletter_id)]


# ---------------------------------------------------------------------------- changes


def create(
    settings: Settings, newsletter_id: str, fields: Mapping[str, Any], *, actor: str, now: datetime
) -> StoredDraft:
    """Store a new newsletter at version 1. Raises DraftInvalid (fields, each named),
    NameTaken (a file newsletter, a drip, a stored or an already scheduled newsletter has the
    name)."""
    document = _checked(settings, newsletter_id, fields)
    _name_free_of_files(settings, newsletter_id)
    with transaction(settings.database_url) as session:
        if drafts_store.newsletter_state(session, newsletter_id) is not None:
            raise NameTaken(f"id: a newsletter named {newsletter_id!r} was already scheduled; choose another name")
        row = drafts_store.insert_draft(session, newsletter_id, document, actor, now)
        if row is None:
            raise NameTaken(f"id: a stored newsletter named {newsletter_id!r} exists; choose another name")
        record_audit(
            session,
            actor=actor,
            action="newsletter.create",
            target=f"newsletter:{newsletter_id}",
            detail={"version": 1, "fields": sorted(document)},
            now=now,
        )
        return _stored(row, "draft")


def update(
    settings: Settings,
    newsletter_id: str,
    fields: Mapping[str, Any],
    *,
    expected_version: int,
    actor: str,
    now: datetime,
) -> StoredDraft:
    """Replace the draft's fields (all of them: a field left out is removed) as version n+1.
    Raises NotFound, DraftInvalid, VersionConflict (`expected_version` is not the current one:
    nothing is written), DraftLocked (scheduled or later)."""
    document = _checked(settings, newsletter_id, fields)
    with transaction(settings.database_url) as session:
        row = _editable(session, newsletter_id, expected_version)
        changed = sorted(k for k in {*row.document, *document} if row.document.get(k) != document.get(k))
        if not changed:
            return _stored(row, "draft")  # nothing to save: no new version, no audit noise
        row = drafts_store.save_version(session, row, document, actor, now)
        record_audit(
            session,
            actor=actor,
            action="newsletter.update",
            target=f"newsletter:{newsletter_id}",
            detail={"version": row.version, "changed": changed},
            now=now,
        )
        return _stored(row, "draft")


def delete(
    settings: Settings, newsletter_id: str, *, actor: str, now: datetime, expected_version: int | None = None
) -> None:
    """Delete a draft that was never scheduled, with its history (the audit entry keeps its
    last text). Raises NotFound, DraftLocked, VersionConflict (if `expected_version` is given)."""
    with transaction(settings.database_url) as session:
        row = drafts_store.locked_draft(session, newsletter_id)
        if row is None:
            raise NotFound(f"no stored newsletter {newsletter_id!r}")
        row = _editable(session, newsletter_id, expected_version if expected_version is not None else row.version)
        last = {"version": row.version, "fields": dict(row.document)}
        drafts_store.delete_draft(session, newsletter_id)
        record_audit(
            session, actor=actor, action="newsletter.delete", target=f"newsletter:{newsletter_id}", detail=last, now=now
        )


def schedule(
    settings: Settings,
    newsletter_id: str,
    *,
    at: str | None = None,
    expected_version: int | None = None,
    actor: str,
    now: datetime,
) -> newsletters.Scheduled:
    """Schedule the stored newsletter exactly as a file newsletter is scheduled
    (:func:`cadence.operations.newsletters.schedule`: checks, lock, one ledger row per
    recipient, audit). `at` overrides the draft's ``send_at``. Raises NotFound, DraftInvalid
    (not complete), VersionConflict (`expected_version` given and not current, or a save landed
    while scheduling), CampaignError (the email checks failed), InputError (nobody in the
    audience, a time in the past, already sending)."""
    with transaction(settings.database_url) as session:
        if drafts_store.draft(session, newsletter_id) is None:
            raise NotFound(f"no stored newsletter {newsletter_id!r}")
    return newsletters.schedule(settings, newsletter_id, at=at, actor=actor, now=now, expected_version=expected_version)


def send_test(
    runtime: Runtime,
    newsletter_id: str,
    to: Sequence[str],
    *,
    actor: str,
    now: datetime,
    subscriber: str | None = None,
    subscriber_field: str = "subscriber",
) -> int:
    """Send the stored newsletter as saved now to `to` (at most
    :data:`cadence.operations.newsletters.MAX_TEST_ADDRESSES`), subject marked ``[TEST]``,
    through the real transport; no ledger row, never counted; audit-logged. `subscriber` (an
    address or a subscriber id; empty: a sample reader) fills it with that person's data, as
    ``cadence newsletters test --subscriber`` does. Returns how many were sent. Raises NotFound,
    DraftInvalid (not complete), InputError (addresses; an unknown subscriber, naming
    `subscriber_field` as the form or API calls it: nothing is sent), TransportError."""
    chosen = (subscriber or "").strip()
    with transaction(runtime.settings.database_url) as session:
        if drafts_store.draft(session, newsletter_id) is None:
            raise NotFound(f"no stored newsletter {newsletter_id!r}")
        email = _subscriber_email(session, chosen, subscriber_field) if chosen else None
    return newsletters.send_test(runtime, newsletter_id, list(to), actor=actor, now=now, subscriber_email=email)


def _subscriber_email(session: Session, chosen: str, field_name: str) -> str:
    """The address of the subscriber `chosen` names (their address, or their id as the console's
    subscriber pages show it); InputError naming the field otherwise."""
    # An id is ASCII digits within the database's integers ("²" is a digit to str.isdigit, and a
    # 20-digit number overflows SQLite's and PostgreSQL's BIGINT): anything else is an address.
    numeric = chosen.isascii() and chosen.isdigit()
    found = console_store.subscriber(session, int(chosen)) if numeric and int(chosen) < 2**63 else None
    if found is None and not numeric:
        found = subscriber_by_email_key(session, email_key(chosen))
    if found is None:
        raise InputError(f"{field_name}: no subscriber {chosen!r} (give their address or id)")
    return found.email


# ---------------------------------------------------------------------------- live, unsaved


def preview(
    settings: Settings,
    fields: Mapping[str, Any],
    *,
    now: datetime,
    newsletter_id: str | None = None,
    subscriber: Mapping[str, Any] | None = None,
    checks: bool = False,
) -> DraftPreview:
    """Render `fields` (saved or not: nothing is written) as a sample reader would get it, in the
    newsletter layout: subject, preheader, HTML and text. Missing or invalid fields are shown
    as placeholders and listed in ``problems``. `subscriber` (``first_name``, ``email``,
    ``attributes``) replaces the sample reader; `checks` adds the drips' email checks (slower:
    every sample reader is rendered). Raises DraftInvalid only when ``based_on`` (or the name)
    is unusable, CampaignError/TemplateError when a referenced drip is broken."""
    newsletter, problems = sketch_newsletter(newsletter_id or PREVIEW_ID, fields)
    loaded = _loaded(settings, newsletter, now)
    variant = loaded.renderer.variant(loaded.campaign, loaded.campaign.steps[0], EVERYONE)
    sample = dict(subscriber or DEFAULT_SAMPLE_SUBSCRIBERS[0])
    manage = f"{settings.base_url}/manage"  # a reviewer's click must not unsubscribe anybody
    message = build_copy(
        loaded.campaign,
        variant,
        delivery_id=0,
        secret_key=settings.secret_key,
        to=Address(str(sample.get("email") or "jordan@example.com")),
        subscriber=sample,
        links={"unsubscribe": manage, "preferences": manage, "web_view": manage},
        link_url=None,
        pixel_url=None,
    )
    found = tuple(str(p) for p in validate_campaign(loaded.campaign, loaded.renderer)) if checks else ()
    return DraftPreview(
        subject=message.subject,
        preheader=newsletter.preheader or "",
        html=message.html,
        text=message.text,
        problems=tuple(problems),
        checks=found,
    )


def audience_counts(
    settings: Settings, fields: Mapping[str, Any], *, now: datetime, newsletter_id: str | None = None
) -> newsletters.AudienceCount:
    """How many people `fields`' audience would reach now, per segment of the drip it counts by
    (nothing is written; suppressed addresses are not counted). Only ``based_on`` and
    ``audience`` matter; their problems raise DraftInvalid naming the field."""
    document = draft_document(fields)
    wanted: dict[str, Any] = {k: document[k] for k in ("based_on", "audience") if k in document}
    problems = [
        p
        for p in draft_problems(newsletter_id or PREVIEW_ID, {**wanted, "subject": "-", "preheader": "-", "body": "-"})
        if p.field.split(".", 1)[0] in ("based_on", "audience", "id")
    ]
    if problems:
        raise DraftInvalid(problems)
    newsletter, _ = sketch_newsletter(newsletter_id or PREVIEW_ID, wanted)
    return newsletters.count_audience(settings, _loaded(settings, newsletter, now), now)


# ---------------------------------------------------------------------------- helpers


def _checked(settings: Settings, newsletter_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The document to store, or DraftInvalid: every given field valid (missing subject,
    preheader, body or audience allowed), and the drips it names exist."""
    if not isinstance(fields, Mapping):
        raise DraftInvalid([FieldProblem("(top level)", "expected an object of fields")])
    document = draft_document(fields)
    problems = draft_problems(newsletter_id, {**_missing_filled(document), **document})
    if not problems:
        problems = _reference_problems(settings, newsletter_id, {**_missing_filled(document), **document})
    if problems:
        raise DraftInvalid(problems)
    return document


def _missing_filled(document: Mapping[str, Any]) -> dict[str, Any]:
    fill: dict[str, Any] = {"subject": "-", "preheader": "-", "body": "-", "audience": {"topics": ["-"]}}
    return {k: v for k, v in fill.items() if k not in document}


def _reference_problems(settings: Settings, newsletter_id: str, document: Mapping[str, Any]) -> list[FieldProblem]:
    """The drips `document` names (``based_on``, ``audience.segments``) exist and have those
    segments; each problem named by its field (newsletter_files.referenced_campaigns checks)."""
    newsletter = draft_newsletter(newsletter_id, document)
    try:
        referenced_campaigns(newsletter, settings.campaigns_dir, settings.templates_dir)
    except CampaignError as exc:
        text = str(exc).removeprefix(f"{newsletter.source}: ")
        where, _, message = text.partition(": ")
        if where == "id":
            raise NameTaken(f"id: {message}") from None
        return [FieldProblem(where, message or text)]
    return []


def _name_free_of_files(settings: Settings, newsletter_id: str) -> None:
    for suffix in (".yaml", ".yml"):
        if (settings.campaigns_dir / NEWSLETTERS_FOLDER / f"{newsletter_id}{suffix}").is_file():
            raise NameTaken(f"id: a newsletter file {newsletter_id}{suffix} has this name; choose another")
        if (settings.campaigns_dir / f"{newsletter_id}{suffix}").is_file():
            raise NameTaken(f"id: the drip campaign {newsletter_id!r} has this name; choose another")


def _editable(session: Any, newsletter_id: str, expected_version: int) -> NewsletterDraft:
    """The draft locked for a change, if it is still a draft and at `expected_version`."""
    row = drafts_store.locked_draft(session, newsletter_id)
    if row is None:
        raise NotFound(f"no stored newsletter {newsletter_id!r}")
    state = drafts_store.newsletter_state(session, newsletter_id)
    if state is not None and state != "draft":
        raise DraftLocked(newsletter_id, _states(session, [newsletter_id]).get(newsletter_id, state))
    if row.version != expected_version:
        raise VersionConflict(newsletter_id, expected_version, row.version)
    return row


def _states(session: Any, ids: list[str]) -> dict[str, str]:
    """Each scheduled newsletter's state as shown (``sending``/``sent`` come from the ledger)."""
    stored = drafts_store.newsletter_states(session, ids)
    counts = newsletter_store.copy_counts(session, list(stored))
    states: dict[str, str] = {}
    for newsletter_id, state in stored.items():
        by_state = counts.get(newsletter_id, {})
        pending = sum(by_state.get(s, 0) for s in newsletter_store.PENDING)
        finished = sum(n for s, n in by_state.items() if s not in newsletter_store.PENDING)
        states[newsletter_id] = effective_state(state, pending=pending, finished=finished)
    return states


def _stored(row: NewsletterDraft, state: str) -> StoredDraft:
    document = dict(row.document)
    missing = tuple(
        p for p in draft_problems(row.id, document) if p.field in _PLACEHOLDER_FIELDS or p.field == "(top level)"
    )
    return StoredDraft(
        id=row.id,
        version=row.version,
        state=state,
        fields=document,
        missing=missing,
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _version(row: NewsletterDraftVersion) -> DraftVersion:
    return DraftVersion(version=row.version, fields=dict(row.document), saved_at=row.saved_at, saved_by=row.saved_by)


_RENDERERS: dict[str, Renderer] = {}  # per templates directory: the compiled layout is reused
_REFERENCES: dict[tuple[Any, ...], tuple[float, Campaign, Campaign]] = {}
REFERENCES_FOR_SECONDS = 2.0  # as Renderer re-checks its templates every few seconds (core/render.py)


def _loaded(settings: Settings, newsletter: Newsletter, now: datetime) -> newsletters.Loaded:
    """As :func:`cadence.operations.newsletters.loaded_from`, made for a composer that previews
    on every keystroke: one renderer per templates directory is kept between calls (the layout's
    compiled templates are reused; Renderer checks them against the files), and the drips the
    newsletter refers to are read again at most every REFERENCES_FOR_SECONDS (parsing the
    campaign's YAML was half of a preview's time: measured with cProfile, bench/draft_preview.py)."""
    audience = newsletter.audience
    key = (
        str(settings.campaigns_dir),
        str(settings.templates_dir),
        newsletter.id,
        newsletter.based_on,
        audience.segments_campaign,
        audience.segments,
    )
    clock = time.monotonic()
    cached = _REFERENCES.get(key)
    if cached is not None and clock - cached[0] < REFERENCES_FOR_SECONDS:
        based_on, counted = cached[1], cached[2]
    else:
        based_on, counted = referenced_campaigns(newsletter, settings.campaigns_dir, settings.templates_dir)
        if len(_REFERENCES) > 256:
            _REFERENCES.clear()
        _REFERENCES[key] = (clock, based_on, counted)
    folder = str(settings.templates_dir)
    renderer = _RENDERERS.get(folder)
    if renderer is None:
        renderer = _RENDERERS.setdefault(folder, Renderer(newsletter_loader(FileSystemLoader(folder))))
    return newsletters.Loaded(newsletter, counted, render_campaign(newsletter, based_on, now), renderer)
