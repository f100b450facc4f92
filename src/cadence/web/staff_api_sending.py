"""The staff API's sending routes (issue 13 item 9): campaigns (list, state, pause, resume,
cancel, send-test) and newsletters (list, status, audience, schedule, pause, resume, cancel,
send-test), mounted with the rest of the staff API under ``/api/admin`` (and ``/api/staff``).

Each route only translates HTTP into the operation the CLI runs
(:mod:`cadence.operations.lifecycle`, :mod:`cadence.operations.test_sends`,
:mod:`cadence.operations.newsletters`) with the token as the actor (``token:<name>``), so the
audit log says who did it. Reading needs a ``read`` token, changing anything ``write``. A
cancel cannot be undone, so its body must repeat the id (``{"confirm": "<id>"}``), as
``cadence campaigns cancel`` asks for ``--yes``: a script that loops over the wrong list gets a
422 instead of cancelling everything.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from cadence.errors import CampaignError, InputError, NotFound, TemplateError, TransportError
from cadence.operations import newsletters
from cadence.operations.campaign_overview import campaign_summaries
from cadence.operations.lifecycle import change_state
from cadence.operations.test_sends import MAX_TEST_RECIPIENTS, send_campaign_test
from cadence.web.staff_api import ERRORS, ErrorOut, Reader, Writer
from cadence.web.state import State

router = APIRouter(
    tags=["staff: sending"],
    responses={**ERRORS, 503: {"model": ErrorOut, "description": "The mail server did not take the test email."}},
)

# Bounded: a name becomes campaigns/<name>.yaml, and past NAME_MAX (255) that was an OSError 500.
Name = Annotated[str, Path(max_length=200)]


def _refused(exc: Exception) -> HTTPException:
    """Our errors as the staff API's other routes answer them: 404 for an unknown name, 422 for
    a request that cannot work (the message says why)."""
    if isinstance(exc, NotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, TransportError):  # the mail server is down or refused: try again later
        return HTTPException(503, f"the test was not sent: {exc}")
    return HTTPException(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: str = Field(max_length=200, description="The id of what is cancelled, repeated: it cannot be undone")


def _confirmed(name: str, body: ConfirmIn) -> None:
    if body.confirm != name:
        raise _refused(InputError(f'confirm: cancelling cannot be undone; send {{"confirm": "{name}"}} to do it'))


# ---------------------------------------------------------------------------- campaigns


@router.get("/campaigns")
def campaigns(token: Reader, state: State, all: bool = False) -> list[dict[str, Any]]:
    """Every campaign with its state (running, paused, cancelled, held), the people in it and
    waiting for their next email (``postponed``: of them, those whose email waits for the next
    send window), the queued emails and the next send; archived ones only with ``all=true``."""
    return [s.document() for s in campaign_summaries(state.settings, include_archived=all)]


@router.get("/campaigns/{campaign}")
def campaign(campaign: Name, token: Reader, state: State) -> dict[str, Any]:
    """One campaign's state, as in the list."""
    for summary in campaign_summaries(state.settings, include_archived=True):
        if summary.id == campaign:
            return summary.document()
    raise HTTPException(404, f"no campaign {campaign!r}")


def _lifecycle(campaign: str, action: str, token: Any, state: Any) -> dict[str, object]:
    try:
        return change_state(state.settings, campaign, action, actor=token.actor).document()
    except (NotFound, InputError) as exc:
        raise _refused(exc) from None


@router.post("/campaigns/{campaign}/pause")
def pause_campaign(campaign: Name, token: Writer, state: State) -> dict[str, object]:
    """No new emails within about a second; everyone keeps their place. Idempotent."""
    return _lifecycle(campaign, "pause", token, state)


@router.post("/campaigns/{campaign}/resume")
def resume_campaign(campaign: Name, token: Writer, state: State) -> dict[str, object]:
    """Sending goes on: nothing repeated, nothing skipped, in the send window, at the usual rate."""
    return _lifecycle(campaign, "resume", token, state)


@router.post("/campaigns/{campaign}/cancel")
def cancel_campaign(campaign: Name, body: ConfirmIn, token: Writer, state: State) -> dict[str, object]:
    """For good: queued emails are never sent, everyone leaves the series."""
    _confirmed(campaign, body)
    return _lifecycle(campaign, "cancel", token, state)


class CampaignTestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: str = Field(min_length=1, max_length=200, description="Its number (1 = the first) or its id")
    to: list[str] = Field(min_length=1, max_length=MAX_TEST_RECIPIENTS)
    segment: str | None = Field(default=None, max_length=200)
    subscriber: str | None = Field(
        default=None, max_length=320, description="Fill it with this subscriber's data (their address or id)"
    )


@router.post("/campaigns/{campaign}/send-test")
def send_campaign_test_email(campaign: Name, body: CampaignTestIn, token: Writer, state: State) -> dict[str, Any]:
    """Send one email of the campaign to the given addresses, subject marked [TEST]; never
    counted in results; 100 test emails per hour in all."""
    if any("," in address for address in body.to):
        raise _refused(InputError("to: one address per item"))
    try:
        result = send_campaign_test(
            state.runtime,
            campaign,
            step=body.step,
            segment=body.segment,
            to=",".join(body.to),
            subscriber=body.subscriber,
            actor=token.actor,
            subscriber_field="subscriber",
        )
    except (NotFound, InputError, CampaignError, TemplateError, TransportError) as exc:
        raise _refused(exc) from None
    return result.document()


# ---------------------------------------------------------------------------- newsletters


@router.get("/newsletters")
def newsletter_list(token: Reader, state: State) -> list[dict[str, Any]]:
    """Every newsletter: drafts (files) and scheduled, sending, sent, paused or cancelled ones."""
    return [_plain(item) for item in newsletters.list_all(state.settings)]


@router.get("/newsletters/{newsletter}")
def newsletter_status(newsletter: Name, token: Reader, state: State) -> dict[str, Any]:
    """Its state; sent, failed, skipped, queued (also as ``waiting``); unique opens and clicks; per segment."""
    try:
        return _plain(newsletters.status(state.settings, newsletter))
    except NotFound as exc:
        raise _refused(exc) from None


@router.get("/newsletters/{newsletter}/audience")
def newsletter_audience(newsletter: Name, token: Reader, state: State) -> dict[str, Any]:
    """How many people it would go to now, per segment (suppressed addresses not counted)."""
    try:
        return newsletters.audience(state.settings, newsletter, state.now()).document()
    except (NotFound, InputError, CampaignError) as exc:
        raise _refused(exc) from None


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str | None = Field(
        default=None, max_length=60, description='"2027-01-12 09:00 local" or an instant; default: the file\'s send_at'
    )


@router.post("/newsletters/{newsletter}/schedule")
def newsletter_schedule(newsletter: Name, body: ScheduleIn, token: Writer, state: State) -> dict[str, Any]:
    """Lock this version and queue one copy per recipient at the send time. Again before
    sending started: replaces the version, audience and time."""
    try:
        done = newsletters.schedule(state.settings, newsletter, at=body.at, actor=token.actor, now=state.now())
    except (NotFound, InputError, CampaignError, TemplateError) as exc:
        raise _refused(exc) from None
    return _plain(asdict(done))


def _newsletter_change(newsletter: str, action: str, token: Any, state: Any) -> dict[str, Any]:
    operation = {"pause": newsletters.pause, "resume": newsletters.resume, "cancel": newsletters.cancel}[action]
    try:
        now_state, copies = operation(state.settings, newsletter, actor=token.actor, now=state.now())
    except (NotFound, InputError) as exc:
        raise _refused(exc) from None
    return {"newsletter": newsletter, "action": action, "state": now_state, "copies": copies}


@router.post("/newsletters/{newsletter}/pause")
def newsletter_pause(newsletter: Name, token: Writer, state: State) -> dict[str, Any]:
    """Hold every copy not yet sent."""
    return _newsletter_change(newsletter, "pause", token, state)


@router.post("/newsletters/{newsletter}/resume")
def newsletter_resume(newsletter: Name, token: Writer, state: State) -> dict[str, Any]:
    """Queue the held copies again, each at its send time."""
    return _newsletter_change(newsletter, "resume", token, state)


@router.post("/newsletters/{newsletter}/cancel")
def newsletter_cancel(newsletter: Name, body: ConfirmIn, token: Writer, state: State) -> dict[str, Any]:
    """For good: no copy not yet sent will ever be sent."""
    _confirmed(newsletter, body)
    return _newsletter_change(newsletter, "cancel", token, state)


class NewsletterTestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: list[str] = Field(min_length=1, max_length=newsletters.MAX_TEST_ADDRESSES)
    subscriber: str | None = Field(
        default=None, max_length=320, description="Fill it with this subscriber's data (their address or id)"
    )


@router.post("/newsletters/{newsletter}/send-test")
def newsletter_send_test(newsletter: Name, body: NewsletterTestIn, token: Writer, state: State) -> dict[str, Any]:
    """Send it as it is now to the given addresses, subject marked [TEST]; never counted."""
    try:
        sent = newsletters.send_test(
            state.runtime, newsletter, body.to, actor=token.actor, now=state.now(), subscriber_email=body.subscriber
        )
    except (NotFound, InputError, CampaignError, TemplateError, TransportError) as exc:
        raise _refused(exc) from None
    return {"newsletter": newsletter, "sent": sent, "data_of": body.subscriber or "sample"}


def _plain(document: dict[str, Any]) -> dict[str, Any]:
    """Datetimes as ISO 8601 strings (FastAPI would too; explicit so the shape is stable)."""
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in document.items()}
