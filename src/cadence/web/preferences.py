"""The preference center at ``/p/<token>``: the answers to the questions of the form the
subscriber signed up on, pause, unsubscribe, and a button that emails a data link for export
and erase (web/manage.py; the preference link itself may have been
forwarded, so it opens nothing more sensitive than what an email's footer already allows).

Each POST redirects back to the page (303, POST/Redirect/GET) with ``?done=...`` so a reload
never repeats an action.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from cadence.core.signup_forms import SignupForm
from cadence.operations.exit_goals import goal_campaigns
from cadence.operations.preferences import (
    PAUSE_WEEKS,
    pause,
    resume,
    subscriber_for_preferences,
    unsubscribe_everything,
    update_answers,
)
from cadence.web.forms import Posted, month_choices
from cadence.web.state import State, WebState, limit_posts

router = APIRouter(include_in_schema=False)
FormText = Annotated[str, Form()]

_DONE = {
    "saved": "Your answers are saved. The next email will follow them.",
    "paused": "Emails are paused.",
    "resumed": "Emails are back on.",
    "unsubscribed": "You are unsubscribed. We won't email you again.",
    "data-link": "We emailed you a link to download or erase your data. It works once, for 30 minutes.",
}


def _page(
    state: WebState,
    request: Request,
    token: str,
    *,
    errors: dict[str, str] | None = None,
    done: str = "",
    posted: dict[str, str] | None = None,
) -> Response:
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
        form = _form_of(state, subscriber.consent)
        stored = form.stored_answers(subscriber.attributes)
        email, first_name, status = subscriber.email, subscriber.first_name, subscriber.status
        paused_until, consent = subscriber.paused_until, subscriber.consent
    now = state.now()
    values = posted if posted is not None else stored or {q.id: "" for q in form.questions}
    context = {
        "token": token,
        "email": email,
        "first_name": first_name,
        "status": status,
        "paused_until": paused_until,
        "paused": paused_until is not None and paused_until > now,
        "consent": consent,
        "form": form,
        "values": values,
        "errors": errors or {},
        "done": _DONE.get(done, ""),
        "months": month_choices(now),
        "pause_weeks": PAUSE_WEEKS,
    }
    return state.render(request, "preferences.html", context, status=400 if errors else 200, forms=True)


def _form_of(state: WebState, consent: dict[str, Any]) -> SignupForm:
    """The questions a subscriber answers are those of the form they signed up on."""
    return state.form_of_signup(str(consent.get("form") or ""))


def _back(token: str, done: str) -> Response:
    return RedirectResponse(f"/p/{token}?done={done}", status_code=303)


@router.get("/p/{token}")
def preferences(token: str, request: Request, state: State, done: str = "") -> Response:
    return _page(state, request, token, done=done)


@router.post("/p/{token}", dependencies=[Depends(limit_posts)])
def save_answers(token: str, request: Request, state: State, fields: Posted) -> Response:
    state.csrf.verify(request, fields.get("csrf_token", ""))
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
        form = _form_of(state, subscriber.consent)
        posted = {q.id: fields.get(q.id, "") for q in form.questions}
        # Every bad field gets its message, as on the signup form; nothing is saved then.
        answers, errors = form.check_answers(posted)
        if not errors:
            update_answers(
                session, subscriber, answers, state.now(), how="page", goals=goal_campaigns(state.runtime.catalog)
            )
    if errors:
        return _page(state, request, token, errors=errors, posted=posted)
    return _back(token, "saved")


@router.post("/p/{token}/pause", dependencies=[Depends(limit_posts)])
def pause_emails(
    token: str, request: Request, state: State, csrf_token: FormText = "", weeks: FormText = ""
) -> Response:
    state.csrf.verify(request, csrf_token)
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
        if weeks == "resume":
            resume(session, subscriber, state.now(), how="page")
            return _back(token, "resumed")
        weeks_chosen = int(weeks) if weeks in {str(w) for w in PAUSE_WEEKS} else 0
        pause(session, subscriber, weeks_chosen, state.now(), how="page")
    return _back(token, "paused")


@router.post("/p/{token}/unsubscribe", dependencies=[Depends(limit_posts)])
def unsubscribe_all(token: str, request: Request, state: State, csrf_token: FormText = "") -> Response:
    state.csrf.verify(request, csrf_token)
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
        unsubscribe_everything(session, subscriber, state.now(), how="preference center")
    return _back(token, "unsubscribed")
