"""The links that replace one-click access to sensitive things (issue 10).

``/manage``
    The neutral "manage your subscription" page the shareable web view links to: it asks for an
    address and, if that address is on the list, emails it its preference link. The answer and
    its timing are the same whatever the address (no enumeration), and each address gets at
    most ``links_per_address`` such emails an hour.
``POST /p/<token>/data-link``
    From the preference page: email the address on file a data link (operations/privacy.py).
``/d/<token>``
    The data link's page: download everything (GDPR Art. 15/20) or erase it (Art. 17), once.
    Opening it changes nothing (link scanners GET every URL in an email); the buttons POST.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from cadence.errors import InputError
from cadence.operations.preferences import manageable_subscriber, subscriber_for_preferences
from cadence.operations.privacy import (
    erase,
    export_data,
    forget_old_pages,
    subscriber_for_data_link,
)
from cadence.operations.transactional import send_transactional
from cadence.web.forms import check_email
from cadence.web.ratelimit import RateLimited
from cadence.web.state import State, WebState, limit_posts

router = APIRouter(include_in_schema=False)
FormText = Annotated[str, Form()]


def address_limited(state: WebState, kind: str, address: str) -> int:
    """Count one emailed link for `address` (per mailbox: ``a+x@`` counts as ``a@``); seconds
    to wait if over the limit."""
    return state.mailbox_limited(kind, address, state.limits.links_per_address)


# ---------------------------------------------------------------------------- /manage


@router.get("/manage")
def manage_form(request: Request, state: State) -> Response:
    return state.render(request, "manage.html", {"sent": False, "errors": {}, "email": ""}, forms=True)


@router.post("/manage", dependencies=[Depends(limit_posts)])
def manage_request(
    request: Request, state: State, background: BackgroundTasks, csrf_token: FormText = "", email: FormText = ""
) -> Response:
    started = time.monotonic()
    state.csrf.verify(request, csrf_token)
    try:
        address = check_email(email)
    except InputError as exc:
        context = {"sent": False, "errors": {"email": str(exc).partition(": ")[2]}, "email": ""}
        return state.render(request, "manage.html", context, status=400, forms=True)
    with state.session() as session:
        target = manageable_subscriber(session, address)
        if target is not None and not address_limited(state, "manage", target.email):
            background.add_task(send_transactional, state.runtime, "manage", target.id, "")
    state.pad_signup(started)
    return state.render(request, "manage.html", {"sent": True, "errors": {}, "email": ""})


# ---------------------------------------------------------------------------- data link


@router.post("/p/{token}/data-link", dependencies=[Depends(limit_posts)])
def request_data_link(
    token: str, request: Request, state: State, background: BackgroundTasks, csrf_token: FormText = ""
) -> Response:
    state.csrf.verify(request, csrf_token)
    send_data_link(state, token, background)
    return RedirectResponse(f"/p/{token}?done=data-link", status_code=303)


def send_data_link(state: WebState, preferences_token: str, background: BackgroundTasks) -> None:
    """Email the owner of `preferences_token` a fresh data link (export or erase, single use,
    30 minutes), at most a few an hour per mailbox: the page's and the API's one way to do it."""
    with state.session() as session:
        subscriber = subscriber_for_preferences(session, state.settings.secret_key, preferences_token)
        wait = address_limited(state, "data-link", subscriber.email)
        if wait:
            raise RateLimited(wait)
        subscriber_id = subscriber.id
    # The link (a fresh single-use token) is made when the email is sent: none is stored.
    background.add_task(send_transactional, state.runtime, "data-link", subscriber_id, "")


@router.get("/d/{token}")
def data_page(token: str, request: Request, state: State) -> Response:
    with state.session() as session:
        subscriber = subscriber_for_data_link(session, state.settings.secret_key, token, state.now(), use=False)
        email = subscriber.email
    return state.render(request, "data.html", {"token": token, "email": email, "errors": {}}, forms=True)


@router.post("/d/{token}/export", dependencies=[Depends(limit_posts)])
def data_export(token: str, request: Request, state: State, csrf_token: FormText = "") -> Response:
    """All we hold about the subscriber as a JSON download (GDPR Art. 15 and 20); spends the link."""
    state.csrf.verify(request, csrf_token)
    with state.session() as session:
        subscriber = subscriber_for_data_link(session, state.settings.secret_key, token, state.now(), use=True)
        data = export_data(session, subscriber)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-data.json"'},
    )


@router.post("/d/{token}/erase", dependencies=[Depends(limit_posts)])
def data_erase(
    token: str, request: Request, state: State, csrf_token: FormText = "", confirm: FormText = ""
) -> Response:
    state.csrf.verify(request, csrf_token)
    if confirm != "yes":
        with state.session() as session:
            subscriber = subscriber_for_data_link(session, state.settings.secret_key, token, state.now(), use=False)
            email = subscriber.email
        errors = {"erase": "Tick the box to confirm you want everything erased."}
        return state.render(
            request, "data.html", {"token": token, "email": email, "errors": errors}, status=400, forms=True
        )
    with state.session() as session:
        subscriber = subscriber_for_data_link(session, state.settings.secret_key, token, state.now(), use=True)
        erase(session, subscriber, state.now(), state.suppression_keys)
    forget_old_pages(state.settings.database_url)
    return state.render(request, "erased.html")
