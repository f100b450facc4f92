"""HTML pages: sign up, confirm, unsubscribe (RFC 8058). Thin: parse, call a plain function,
render. Every POST but the one-click unsubscribe checks a CSRF token and counts against the
per-IP limit (dependencies ``limit_posts`` and ``Csrf.verify``)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from cadence.errors import InputError
from cadence.tokens import make_token
from cadence.web.account import unsubscribe_everything, unsubscribe_token
from cadence.web.forms import (
    FIELD_MESSAGES,
    MONTH,
    TERRAINS,
    SignupData,
    check_email,
    check_first_name,
    month_choices,
    parse_answers,
)
from cadence.web.security import client_ip
from cadence.web.state import State, WebState, limit_posts
from cadence.web.subscription import CONSENT, SignupContext, read_confirmation_token

router = APIRouter(include_in_schema=False)
FormText = Annotated[str, Form()]

FORM_ID = "web:subscribe"


@router.get("/")
def home() -> Response:
    return RedirectResponse("/subscribe", status_code=303)


def _signup_page(state: WebState, request: Request, values: dict[str, str], errors: dict[str, str]) -> Response:
    return state.render(
        request,
        "subscribe.html",
        {
            "values": values,
            "errors": errors,
            "terrains": TERRAINS,
            "months": month_choices(state.now()),
            "consent_text": CONSENT.text,
        },
        status=400 if errors else 200,
        forms=True,
    )


@router.get("/subscribe")
def subscribe_form(request: Request, state: State) -> Response:
    return _signup_page(state, request, {}, {})


@router.post("/subscribe", dependencies=[Depends(limit_posts)])
def subscribe(
    request: Request,
    state: State,
    background: BackgroundTasks,
    csrf_token: FormText = "",
    email: FormText = "",
    first_name: FormText = "",
    terrain: FormText = "",
    training_for_race: FormText = "",
    race_month: FormText = "",
    website: FormText = "",  # the honeypot: hidden from people, filled in by naive bots
) -> Response:
    started = time.monotonic()
    state.csrf.verify(request, csrf_token)
    if website:
        # Look exactly like success so the bot learns nothing; store and send nothing.
        state.pad_signup(started)
        return state.render(request, "check_inbox.html")
    values = {
        "email": email,
        "first_name": first_name,
        "terrain": terrain,
        "training_for_race": training_for_race,
        "race_month": race_month,
    }
    data = _validate(values)
    if isinstance(data, dict):
        return _signup_page(state, request, values, data)
    where = SignupContext(
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
        form_id=FORM_ID,
        page_url=f"{state.settings.base_url}/subscribe",
    )
    state.sign_up(data, where, background)
    # The same page whatever happened (new, pending, active, unsubscribed, suppressed, limited),
    # after the same time.
    state.pad_signup(started)
    return state.render(request, "check_inbox.html")


def _validate(values: dict[str, str]) -> SignupData | dict[str, str]:
    """The signup, or a message per bad field (every field is checked, not just the first)."""
    errors: dict[str, str] = {}
    email = first_name = ""
    try:
        email = check_email(values["email"])
    except InputError:
        errors["email"] = FIELD_MESSAGES["email"]
    try:
        first_name = check_first_name(values["first_name"])
    except InputError as exc:
        # Say what is wrong (an invisible character, its code point; never the text itself).
        errors["first_name"] = f"Your first name {str(exc).partition(': ')[2]}."
    if values["terrain"] not in TERRAINS:
        errors["terrain"] = FIELD_MESSAGES["terrain"]
    if values["training_for_race"] not in ("yes", "no"):
        errors["training_for_race"] = FIELD_MESSAGES["training_for_race"]
    if values["race_month"].strip() and not MONTH.match(values["race_month"].strip()):
        errors["race_month"] = FIELD_MESSAGES["race_month"]
    if errors:
        return errors
    answers = parse_answers(values["terrain"], values["training_for_race"], values["race_month"])
    return SignupData(email, first_name, answers)




# ---------------------------------------------------------------------------- confirm

@router.get("/confirm/{token}")
def confirm_page(token: str, request: Request, state: State) -> Response:
    # Opening the link only shows a button: link scanners and prefetchers (Outlook Safe Links,
    # corporate gateways) GET every URL in an email, and must not confirm on the owner's behalf.
    read_confirmation_token(state.settings.secret_key, token, state.now())
    return state.render(request, "confirm.html", {"token": token}, forms=True)


@router.post("/confirm/{token}", dependencies=[Depends(limit_posts)])
def confirm_submit(token: str, request: Request, state: State, csrf_token: FormText = "") -> Response:
    state.csrf.verify(request, csrf_token)
    result, payload = state.confirm(request, token)
    preferences = make_token(state.settings.secret_key, "preferences", payload[0])
    return state.render(request, "confirmed.html", {"result": result.value, "preferences_token": preferences})


# ---------------------------------------------------------------------------- unsubscribe

def _mask(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'•' * min(6, max(1, len(local) - 1))}@{domain}"


@router.get("/u/{token}")
def unsubscribe_page(token: str, request: Request, state: State) -> Response:
    """The page the email's unsubscribe link opens: one button, nothing changes on GET (RFC 8058
    §3.2: the GET must not unsubscribe, link checkers follow links)."""
    with state.session() as session:
        subscriber, _ = unsubscribe_token(session, state.settings.secret_key, token)
        status, email, subscriber_id = subscriber.status, subscriber.email, subscriber.id
    context = {
        "token": token,
        "status": status,
        "masked": _mask(email),
        "preferences_token": make_token(state.settings.secret_key, "preferences", subscriber_id),
    }
    return state.render(request, "unsubscribe.html", context)


@router.post("/u/{token}")
def unsubscribe_one_click(token: str, request: Request, state: State) -> Response:
    """RFC 8058 one-click: the mail provider POSTs ``List-Unsubscribe=One-Click`` (form-encoded
    or multipart) without cookies; we unsubscribe at once and answer 200, no redirect. No CSRF
    token: the signed token in the URL is the authorisation (RFC 8058 §3.1). The body is not
    required: our own button sends the same field, and no POST to this URL means anything else.
    Not counted against the per-IP limit: big mailbox providers send these from few IPs."""
    with state.session() as session:
        subscriber, delivery_id = unsubscribe_token(session, state.settings.secret_key, token)
        unsubscribe_everything(session, subscriber, state.now(), how="one-click", delivery_id=delivery_id)
    return state.render(request, "unsubscribed.html")
