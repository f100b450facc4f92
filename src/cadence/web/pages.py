"""HTML pages: sign up (every form of ``campaigns/forms/``), confirm, unsubscribe (RFC 8058).
Thin: parse, call an operation (cadence.operations), render. Every POST but the one-click
unsubscribe checks a CSRF token and counts against the per-IP limit (dependencies ``limit_posts``
and ``Csrf.verify``)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cadence.core.signup_forms import SignupForm
from cadence.operations.preferences import preferences_token, unsubscribe_everything, unsubscribe_token
from cadence.operations.signup import SignupContext, read_confirmation_token, signup_form_name
from cadence.web.forms import Posted, month_choices, parse_signup
from cadence.web.security import client_ip
from cadence.web.state import State, WebState, limit_posts

router = APIRouter(include_in_schema=False)
FormText = Annotated[str, Form()]

FORM_ID = "web:subscribe"


@router.get("/")
def home() -> Response:
    return RedirectResponse("/subscribe", status_code=303)


def _form(state: WebState, name: str | None) -> tuple[SignupForm, str]:
    """The form of ``/subscribe`` (name None) or ``/subscribe/<name>``, and its path; 404 for a
    name that is no form."""
    if name is None:
        return state.default_form, "/subscribe"
    form = state.forms.get(name)
    if form is None:
        raise StarletteHTTPException(404)
    return form, f"/subscribe/{name}"


def _signup_page(
    state: WebState, request: Request, form: SignupForm, path: str, values: dict[str, str], errors: dict[str, str]
) -> Response:
    return state.render(
        request,
        "subscribe.html",
        {
            "form": form,
            "action": path,
            "values": values,
            "errors": errors,
            "months": month_choices(state.now()),
            "consent_text": form.consent.text,
        },
        status=400 if errors else 200,
        forms=True,
    )


@router.get("/subscribe")
def subscribe_form(request: Request, state: State) -> Response:
    form, path = _form(state, None)
    return _signup_page(state, request, form, path, {}, {})


@router.get("/subscribe/{name}")
def named_subscribe_form(name: str, request: Request, state: State) -> Response:
    form, path = _form(state, name)
    return _signup_page(state, request, form, path, {}, {})


@router.post("/subscribe", dependencies=[Depends(limit_posts)])
def subscribe(request: Request, state: State, background: BackgroundTasks, fields: Posted) -> Response:
    return _subscribe(state, request, background, fields, None)


@router.post("/subscribe/{name}", dependencies=[Depends(limit_posts)])
def named_subscribe(
    name: str, request: Request, state: State, background: BackgroundTasks, fields: Posted
) -> Response:
    return _subscribe(state, request, background, fields, name)


def _subscribe(
    state: WebState, request: Request, background: BackgroundTasks, fields: dict[str, str], name: str | None
) -> Response:
    started = time.monotonic()
    state.csrf.verify(request, fields.get("csrf_token", ""))
    form, path = _form(state, name)
    if fields.get("website"):
        # The honeypot (hidden from people, filled in by naive bots): look exactly like success
        # so the bot learns nothing; store and send nothing.
        state.pad_signup(started)
        return state.render(request, "check_inbox.html")
    values = {key: fields.get(key, "") for key in ("email", "first_name", *(q.id for q in form.questions))}
    data = parse_signup(form, values)
    if isinstance(data, dict):
        return _signup_page(state, request, form, path, values, data)
    where = SignupContext(
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
        form_id=FORM_ID if name is None else f"{FORM_ID}/{name}",
        page_url=f"{state.settings.base_url}{path}",
        form=form.name,
        consent=form.consent,
    )
    state.sign_up(data, where, background)
    # The same page whatever happened (new, pending, active, unsubscribed, suppressed, limited),
    # after the same time.
    state.pad_signup(started)
    return state.render(request, "check_inbox.html")


# ---------------------------------------------------------------------------- confirm

@router.get("/confirm/{token}")
def confirm_page(token: str, request: Request, state: State) -> Response:
    # Opening the link only shows a button: link scanners and prefetchers (Outlook Safe Links,
    # corporate gateways) GET every URL in an email, and must not confirm on the owner's behalf.
    payload = read_confirmation_token(state.settings.secret_key, token, state.now())
    with state.session() as session:
        form = state.form_of_signup(signup_form_name(session, payload))
    return state.render(request, "confirm.html", {"token": token, "form": form}, forms=True)


@router.post("/confirm/{token}", dependencies=[Depends(limit_posts)])
def confirm_submit(token: str, request: Request, state: State, csrf_token: FormText = "") -> Response:
    state.csrf.verify(request, csrf_token)
    result, payload = state.confirm(request, token)
    preferences = preferences_token(state.settings.secret_key, payload[0])
    with state.session() as session:
        form = state.form_of_signup(signup_form_name(session, payload))
    context = {"result": result.value, "preferences_token": preferences, "form": form}
    return state.render(request, "confirmed.html", context)


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
        "preferences_token": preferences_token(state.settings.secret_key, subscriber_id),
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
