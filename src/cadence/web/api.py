"""The JSON API under ``/api``: the same operations as the pages, described by ``/openapi.json``.

No CSRF token here: nothing authenticates by cookie, and FastAPI accepts JSON bodies only with
an ``application/json`` content type (``strict_content_type``), which a cross-site form cannot
send without a CORS preflight we never grant. Tokens from the emails authorise everything but
signing up; signing up is limited per IP and per address like the form, and answers the same
way whatever the address's state.

Every signup form is served: ``/api/subscribe`` and ``/api/consent`` are the default form's
(the answers and preference bodies too), ``/api/subscribe/<form>`` and ``/api/consent/<form>``
each form's, as ``/subscribe/<form>`` serves its page (issue 12). Each form has its own
body model (its file's questions, see web/forms.answers_model), so :func:`build_router` is
called with the forms when the app is made and the OpenAPI document shows each form's body.
No ``from __future__ import annotations`` here: FastAPI must see the form's models, made at run
time, as real annotations of the routes defined in :func:`build_router`.
"""

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal, cast

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from pydantic import BaseModel, ConfigDict

from cadence.core.signup_forms import SignupForm
from cadence.errors import InputError
from cadence.operations.exit_goals import goal_campaigns
from cadence.operations.preferences import (
    pause,
    resume,
    subscriber_for_preferences,
    unsubscribe_everything,
    unsubscribe_token,
    update_answers,
)
from cadence.operations.privacy import erase, export_data, forget_old_pages, subscriber_for_data_link
from cadence.operations.signup import Answers, SignupContext, SignupData
from cadence.web.forms import SignupFields, answers_model, form_values, model_prefix, signup_model
from cadence.web.manage import send_data_link
from cadence.web.security import client_ip
from cadence.web.state import State, WebState, limit_posts


class ErrorOut(BaseModel):
    detail: str


class StatusOut(BaseModel):
    status: str
    detail: str = ""


class ConsentOut(BaseModel):
    version: str
    text: str


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weeks: Literal[2, 4, 8]


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "The link is not valid."}}
_LIMITED: dict[int | str, dict[str, Any]] = {429: {"model": ErrorOut, "description": "Too many requests."}}
# FastAPI answers 400 when a JSON body cannot even be decoded (invalid UTF-8, say).
_UNREADABLE: dict[int | str, dict[str, Any]] = {400: {"model": ErrorOut, "description": "The body is not JSON."}}

Limited = [Depends(limit_posts)]


def _attributes(form: SignupForm, values: dict[str, str]) -> Answers:
    """The answers as stored attributes. The JSON model already checked each value; the form
    applies what JSON cannot say (a race month only counts when training for a race)."""
    attributes, errors = form.check_answers(values)
    if errors:
        field, message = next(iter(errors.items()))
        raise InputError(f"{field}: {message}")
    return Answers(attributes)


def _signup_routes(router: APIRouter, form: SignupForm, *, default: bool) -> None:
    """``/subscribe`` and ``/consent`` of `form` (under ``/<form name>`` unless it is the default)."""
    suffix = "" if default else f"/{form.name}"
    prefix = model_prefix(form, default)
    AnswersIn = answers_model(form, prefix)
    SignupIn = signup_model(form, AnswersIn, prefix, consent_path=f"/api/consent{suffix}")
    which = "the default signup form" if default else f"the signup form {form.name!r}"

    def consent_wording() -> ConsentOut:
        return ConsentOut(version=form.consent.version, text=form.consent.text)

    consent_wording.__doc__ = f"The consent wording of {which} to show next to its button, and its version."
    router.get(f"/consent{suffix}", response_model=ConsentOut, name=f"consent{suffix}")(consent_wording)

    def subscribe(
        body: SignupIn,  # type: ignore[valid-type]
        request: Request,
        state: State,
        background: BackgroundTasks,
    ) -> StatusOut:
        started = time.monotonic()
        signup = cast(SignupFields, body)
        data = SignupData(signup.email, signup.first_name, _attributes(form, form_values(body, AnswersIn)))
        where = SignupContext(
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent", ""),
            form_id=f"api:subscribe{suffix}",
            page_url=signup.page_url or "",
            form=form.name,
            consent=form.consent,
        )
        state.sign_up(data, where, background)
        state.pad_signup(started)
        return StatusOut(
            status="pending_confirmation", detail="If this address can be subscribed, a link is on its way."
        )

    subscribe.__doc__ = (
        f"Sign up on {which} (double opt-in). The answer is the same for every address: new, "
        "already subscribed, unsubscribed or suppressed."
    )
    router.post(
        f"/subscribe{suffix}",
        status_code=202,
        response_model=StatusOut,
        dependencies=Limited,
        responses={**_UNREADABLE, **_LIMITED},
        name=f"subscribe{suffix}",
    )(subscribe)


def build_router(form: SignupForm, others: Iterable[SignupForm] = ()) -> APIRouter:
    """The ``/api`` routes: signup for the default `form` and for each of `others`; the
    preference bodies are the default form's answers."""
    AnswersIn = answers_model(form)

    class PreferencesOut(BaseModel):
        email: str
        first_name: str
        status: str
        answers: AnswersIn | None  # type: ignore[valid-type]
        paused_until: datetime | None

    router = APIRouter(prefix="/api", tags=["subscribers"])
    _signup_routes(router, form, default=True)
    for other in others:  # the default form too, under its name, as /subscribe/<name> serves it
        _signup_routes(router, other, default=False)

    @router.post(
        "/confirm/{token}", response_model=StatusOut, dependencies=Limited, responses={**_NOT_FOUND, **_LIMITED}
    )
    def confirm_signup(token: str, request: Request, state: State) -> StatusOut:
        """Confirm a signup with the token from the confirmation email's link."""
        result, _ = state.confirm(request, token)
        return StatusOut(status=result.value)

    @router.post("/unsubscribe/{token}", response_model=StatusOut, responses=_NOT_FOUND)
    def unsubscribe(token: str, state: State) -> StatusOut:
        """Unsubscribe with the token of an email's unsubscribe link. Idempotent."""
        with state.session() as session:
            subscriber, delivery_id = unsubscribe_token(session, state.settings.secret_key, token)
            unsubscribe_everything(session, subscriber, state.now(), how="api", delivery_id=delivery_id)
        return StatusOut(status="unsubscribed")

    def _preferences(state: WebState, token: str) -> PreferencesOut:
        with state.session() as session:
            s = subscriber_for_preferences(session, state.settings.secret_key, token)
            return PreferencesOut(
                email=s.email,
                first_name=s.first_name,
                status=s.status,
                answers=AnswersIn.stored(s.attributes),
                paused_until=s.paused_until,
            )

    @router.get("/preferences/{token}", response_model=PreferencesOut, responses=_NOT_FOUND)
    def get_preferences(token: str, state: State) -> PreferencesOut:
        """The subscriber's answers and status (token from an email's preferences link)."""
        return _preferences(state, token)

    @router.put(
        "/preferences/{token}",
        response_model=PreferencesOut,
        dependencies=Limited,
        responses={**_UNREADABLE, **_NOT_FOUND, **_LIMITED},
    )
    def put_preferences(
        token: str,
        answers: AnswersIn,  # type: ignore[valid-type]
        state: State,
    ) -> PreferencesOut:
        """Replace the answers; the next email is chosen by them."""
        attributes = _attributes(form, answers.form_values())  # type: ignore[attr-defined]
        with state.session() as session:
            subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
            update_answers(
                session, subscriber, attributes, state.now(), how="api", goals=goal_campaigns(state.runtime.catalog)
            )
        return _preferences(state, token)

    @router.post(
        "/preferences/{token}/pause",
        response_model=PreferencesOut,
        dependencies=Limited,
        responses={**_UNREADABLE, **_NOT_FOUND, **_LIMITED},
    )
    def pause_emails(token: str, body: PauseIn, state: State) -> PreferencesOut:
        """Pause every email for 2, 4 or 8 weeks."""
        with state.session() as session:
            subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
            pause(session, subscriber, body.weeks, state.now(), how="api")
        return _preferences(state, token)

    @router.delete("/preferences/{token}/pause", response_model=PreferencesOut, responses=_NOT_FOUND)
    def resume_emails(token: str, state: State) -> PreferencesOut:
        """End a pause now."""
        with state.session() as session:
            subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
            resume(session, subscriber, state.now(), how="api")
        return _preferences(state, token)

    @router.post(
        "/preferences/{token}/data-link",
        status_code=202,
        response_model=StatusOut,
        dependencies=Limited,
        responses={**_NOT_FOUND, **_LIMITED},
    )
    def request_data_link(token: str, state: State, background: BackgroundTasks) -> StatusOut:
        """Email the subscriber a link to export or erase their data: it works once, for 30 minutes.
        Its token is what ``/data/{token}/export`` and ``DELETE /data/{token}`` take."""
        send_data_link(state, token, background)
        return StatusOut(status="sent", detail="A link is on its way to the address on file.")

    @router.post("/data/{token}/export", response_model=dict[str, Any], dependencies=Limited, responses=_NOT_FOUND)
    def export(token: str, state: State) -> dict[str, Any]:
        """Everything we hold about the subscriber: profile, consent, enrollments, deliveries, events.
        Spends the data link."""
        with state.session() as session:
            subscriber = subscriber_for_data_link(session, state.settings.secret_key, token, state.now(), use=True)
            return export_data(session, subscriber)

    @router.delete("/data/{token}", response_model=StatusOut, dependencies=Limited, responses=_NOT_FOUND)
    def erase_me(token: str, state: State) -> StatusOut:
        """Erase the subscriber and everything about them; the address stays suppressed under a keyed
        hash until they sign up and confirm again. Spends the data link."""
        with state.session() as session:
            subscriber = subscriber_for_data_link(session, state.settings.secret_key, token, state.now(), use=True)
            erase(session, subscriber, state.now(), state.suppression_keys)
        forget_old_pages(state.settings.database_url)
        return StatusOut(status="erased")

    return router
