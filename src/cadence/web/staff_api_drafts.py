"""The staff API's stored newsletters (issue 13 item 1): newsletters written through the API,
stored as versioned drafts, under ``/api/admin/newsletters/drafts``.

Each route only translates HTTP into :mod:`cadence.operations.newsletter_drafts` with the token as
the actor. Reading needs a ``read`` token, changing anything ``write`` (as the other newsletter
routes, :mod:`cadence.web.staff_api_sending`). Once scheduled, a stored newsletter is paused,
resumed, cancelled and reported on by those routes, by the same name.

The answers a client must tell apart:

- 422: fields are wrong; ``detail`` is FastAPI's list shape, one entry per field, ``loc`` the
  field's path (``["body", "fields", "audience", "rules", 0, "op"]``), so a form shows each
  error beside its field;
- 409: the update was based on an old version (``current_version`` says which is current;
  nothing was written), or the name is taken;
- 423 Locked (RFC 4918 §11.3): scheduled or later, the text can no longer change (``state``).

This router is mounted before the other newsletter routes: ``/newsletters/drafts`` would
otherwise be read as the newsletter named "drafts" by ``/newsletters/{newsletter}``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cadence.errors import CampaignError, InputError, NotFound, TemplateError, TransportError
from cadence.operations import newsletter_drafts as drafts
from cadence.operations.newsletters import MAX_TEST_ADDRESSES
from cadence.web.staff_api import ERRORS, ErrorOut, Reader, Writer
from cadence.web.state import State

router = APIRouter(
    prefix="/newsletters/drafts",
    tags=["staff: newsletters written here"],
    responses={
        **ERRORS,
        409: {"description": "Saved by someone else since (current_version), or the name is taken."},
        423: {"model": ErrorOut, "description": "Scheduled or later: the text is locked."},
    },
)

Name = Annotated[str, Path(max_length=100)]
_LONG = 200_000  # a bound on each text field; the real limits (and their messages) are core's


class DraftFields(BaseModel):
    """A newsletter's fields: those of a newsletter file (campaigns/newsletters/*.yaml), less
    kind, id and template. Subject, preheader, body and audience may be left out while it is
    being written; scheduling needs them."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=_LONG, description="For staff; default: the subject")
    based_on: str | None = Field(
        default=None, max_length=100, description="The drip whose sender, clinic details and tracking it uses"
    )
    subject: str | None = Field(default=None, max_length=_LONG, description="At most 120 characters")
    preheader: str | None = Field(default=None, max_length=_LONG, description="At most 200 characters")
    body: str | None = Field(
        default=None, max_length=_LONG, description="Markdown (CommonMark; raw HTML is shown as text)"
    )
    audience: dict[str, Any] | None = Field(
        default=None,
        description='{"topics": [...], "tags": [...], "segments": {"campaign": ..., "include": [...]}, '
        '"match": "all"|"any", "rules": [{"attribute": ..., "op": ..., "value": ...}]}',
    )
    send_at: str | None = Field(
        default=None, max_length=60, description='"now", "2027-01-12 09:00 local" or an instant with its offset'
    )
    issue_date: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=100, description="For readers without one (IANA)")
    cta: dict[str, Any] | None = Field(default=None, description='{"url": "https://...", "label": "..."}')

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class CreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(max_length=100, description="Its name: lowercase letters, digits, - and _")
    fields: DraftFields


class UpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, description="The version these changes were made on (from the last read)")
    fields: DraftFields


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, max_length=100)
    fields: DraftFields
    checks: bool = Field(default=False, description="Also run the email checks (links, postal address...): slower")


class AudienceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, max_length=100)
    fields: DraftFields


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str | None = Field(default=None, max_length=60, description="Default: the draft's send_at")
    version: int | None = Field(default=None, ge=1, description="If given, refused unless it is the current version")


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: list[str] = Field(min_length=1, max_length=MAX_TEST_ADDRESSES)
    subscriber: str | None = Field(
        default=None, max_length=320, description="Fill it with this subscriber's data (their address or id)"
    )


def _answer(exc: Exception) -> HTTPException | JSONResponse:
    """Our errors as HTTP (see the module docstring)."""
    if isinstance(exc, drafts.DraftInvalid):
        detail = [
            {"loc": _loc(problem.field), "msg": problem.message, "type": "value_error"} for problem in exc.problems
        ]
        return HTTPException(422, detail)
    if isinstance(exc, drafts.VersionConflict):
        body = {"detail": str(exc), "current_version": exc.current_version}
        return JSONResponse(body, status_code=409)
    if isinstance(exc, drafts.DraftLocked):
        return JSONResponse({"detail": str(exc), "state": exc.state}, status_code=423)
    if isinstance(exc, drafts.NameTaken):
        return HTTPException(409, str(exc))
    if isinstance(exc, NotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, TransportError):
        return HTTPException(503, f"the test was not sent: {exc}")
    return HTTPException(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])


def _loc(field: str) -> list[str | int]:
    if field == "id":
        return ["body", "id"]
    if field == "(top level)":
        return ["body", "fields"]
    return ["body", "fields", *(int(part) if part.isdigit() else part for part in field.split("."))]


_REFUSED = (drafts.DraftInvalid, InputError, NotFound, CampaignError, TemplateError, TransportError)


def _refuse(exc: Exception) -> Any:
    answer = _answer(exc)
    if isinstance(answer, HTTPException):
        raise answer from None
    return answer


@router.get("")
def list_drafts(token: Reader, state: State) -> list[dict[str, Any]]:
    """Every newsletter written here, with its version and state."""
    return [draft.document() for draft in drafts.list_drafts(state.settings)]


@router.post("", status_code=201)
def create(body: CreateIn, token: Writer, state: State) -> Any:
    """Store a new newsletter (version 1). 409 if a file newsletter, a drip or another stored
    newsletter has the name."""
    try:
        return drafts.create(
            state.settings, body.id, body.fields.given(), actor=token.actor, now=state.now()
        ).document()
    except _REFUSED as exc:
        return _refuse(exc)


@router.post("/preview")
def preview(body: PreviewIn, token: Reader, state: State) -> Any:
    """Render fields as they are (nothing saved) in the newsletter layout, for a sample reader:
    subject, preheader, HTML, text, and the fields still missing or wrong."""
    try:
        shown = drafts.preview(
            state.settings, body.fields.given(), now=state.now(), newsletter_id=body.id, checks=body.checks
        )
    except _REFUSED as exc:
        return _refuse(exc)
    return shown.document()


@router.post("/audience")
def audience(body: AudienceIn, token: Reader, state: State) -> Any:
    """How many people these audience fields reach now, per segment (nothing saved)."""
    try:
        counted = drafts.audience_counts(state.settings, body.fields.given(), now=state.now(), newsletter_id=body.id)
    except _REFUSED as exc:
        return _refuse(exc)
    return counted.document()


@router.get("/{draft}")
def get(draft: Name, token: Reader, state: State) -> Any:
    """The current version: fields, version, state, and what is missing before scheduling."""
    try:
        return drafts.get(state.settings, draft).document()
    except _REFUSED as exc:
        return _refuse(exc)


@router.put("/{draft}")
def update(draft: Name, body: UpdateIn, token: Writer, state: State) -> Any:
    """Save the fields (all of them: one left out is removed) as the next version. 409 with
    ``current_version`` if someone saved since ``version``; 423 once scheduled."""
    try:
        saved = drafts.update(
            state.settings,
            draft,
            body.fields.given(),
            expected_version=body.version,
            actor=token.actor,
            now=state.now(),
        )
    except _REFUSED as exc:
        return _refuse(exc)
    return saved.document()


@router.delete("/{draft}")
def delete(
    draft: Name,
    token: Writer,
    state: State,
    version: Annotated[int | None, Query(ge=1, description="If given, refused unless current")] = None,
) -> Any:
    """Delete a newsletter never scheduled, with its history (the audit log keeps the text)."""
    try:
        drafts.delete(state.settings, draft, actor=token.actor, now=state.now(), expected_version=version)
    except _REFUSED as exc:
        return _refuse(exc)
    return {"deleted": draft}


@router.get("/{draft}/history")
def history(draft: Name, token: Reader, state: State) -> Any:
    """Every saved version, newest first."""
    try:
        return [version.document() for version in drafts.history(state.settings, draft)]
    except _REFUSED as exc:
        return _refuse(exc)


@router.get("/{draft}/preview")
def preview_saved(draft: Name, token: Reader, state: State) -> Any:
    """The saved version rendered for a sample reader, with the email checks."""
    try:
        saved = drafts.get(state.settings, draft)
        shown = drafts.preview(state.settings, saved.fields, now=state.now(), newsletter_id=draft, checks=True)
    except _REFUSED as exc:
        return _refuse(exc)
    return shown.document()


@router.post("/{draft}/send-test")
def send_test(draft: Name, body: TestIn, token: Writer, state: State) -> Any:
    """Send the saved version to the given addresses, subject marked [TEST]; never counted."""
    try:
        sent = drafts.send_test(
            state.runtime, draft, body.to, actor=token.actor, now=state.now(), subscriber=body.subscriber
        )
    except _REFUSED as exc:
        return _refuse(exc)
    return {"newsletter": draft, "sent": sent}


@router.post("/{draft}/schedule")
def schedule(draft: Name, body: ScheduleIn, token: Writer, state: State) -> Any:
    """Lock the current version and queue one copy per recipient at the send time, exactly as a
    file newsletter is scheduled; from then on the text is read-only (423)."""
    try:
        done = drafts.schedule(
            state.settings, draft, at=body.at, expected_version=body.version, actor=token.actor, now=state.now()
        )
    except _REFUSED as exc:
        return _refuse(exc)
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in asdict(done).items()}
