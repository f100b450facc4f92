"""The preference center at ``/p/<token>``: answers, pause, unsubscribe, and a button that
emails a data link for export and erase (web/manage.py; the preference link itself may have been
forwarded, so it opens nothing more sensitive than what an email's footer already allows).

Each POST redirects back to the page (303, POST/Redirect/GET) with ``?done=...`` so a reload
never repeats an action.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from cadence.errors import InputError
from cadence.web.account import (
    pause,
    resume,
    subscriber_for_preferences,
    unsubscribe_everything,
    update_answers,
)
from cadence.web.forms import FIELD_MESSAGES, PAUSE_WEEKS, TERRAINS, Answers, month_choices, parse_answers
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
    state: WebState, request: Request, token: str, *, errors: dict[str, str] | None = None, done: str = ""
) -> Response:
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
        answers = Answers.stored(subscriber.attributes)
        email, first_name, status = subscriber.email, subscriber.first_name, subscriber.status
        paused_until, consent = subscriber.paused_until, subscriber.consent
    now = state.now()
    values = {"terrain": "", "training_for_race": "", "race_month": ""}
    if answers is not None:
        values = {
            "terrain": answers.terrain,
            "training_for_race": "yes" if answers.training_for_race else "no",
            "race_month": answers.race_month or "",
        }
    context = {
        "token": token,
        "email": email,
        "first_name": first_name,
        "status": status,
        "paused_until": paused_until,
        "paused": paused_until is not None and paused_until > now,
        "consent": consent,
        "values": values,
        "errors": errors or {},
        "done": _DONE.get(done, ""),
        "terrains": TERRAINS,
        "months": month_choices(now),
        "pause_weeks": PAUSE_WEEKS,
    }
    return state.render(request, "preferences.html", context, status=400 if errors else 200, forms=True)


def _back(token: str, done: str) -> Response:
    return RedirectResponse(f"/p/{token}?done={done}", status_code=303)


@router.get("/p/{token}")
def preferences(token: str, request: Request, state: State, done: str = "") -> Response:
    return _page(state, request, token, done=done)


@router.post("/p/{token}", dependencies=[Depends(limit_posts)])
def save_answers(
    token: str,
    request: Request,
    state: State,
    csrf_token: FormText = "",
    terrain: FormText = "",
    training_for_race: FormText = "",
    race_month: FormText = "",
) -> Response:
    state.csrf.verify(request, csrf_token)
    try:
        answers = parse_answers(terrain, training_for_race, race_month)
    except InputError as exc:
        field = str(exc).partition(":")[0]
        return _page(state, request, token, errors={field: FIELD_MESSAGES.get(field, str(exc))})
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
        update_answers(session, subscriber, answers, state.now())
    return _back(token, "saved")


@router.post("/p/{token}/pause", dependencies=[Depends(limit_posts)])
def pause_emails(
    token: str, request: Request, state: State, csrf_token: FormText = "", weeks: FormText = ""
) -> Response:
    state.csrf.verify(request, csrf_token)
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
        if weeks == "resume":
            resume(session, subscriber, state.now())
            return _back(token, "resumed")
        pause(session, subscriber, int(weeks) if weeks in {str(w) for w in PAUSE_WEEKS} else 0, state.now())
    return _back(token, "paused")


@router.post("/p/{token}/unsubscribe", dependencies=[Depends(limit_posts)])
def unsubscribe_all(token: str, request: Request, state: State, csrf_token: FormText = "") -> Response:
    state.csrf.verify(request, csrf_token)
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, token)
        unsubscribe_everything(session, subscriber, state.now(), how="preference center")
    return _back(token, "unsubscribed")
