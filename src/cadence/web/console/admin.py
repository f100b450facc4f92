"""Console pages about accounts: the users page (admin: add, disable, reset; each shows the new
setup link once) and "your account" (password, second factor) for everyone logged in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from starlette.responses import Response

from cadence.errors import InputError, NotFound
from cadence.operations import staff_accounts as accounts
from cadence.operations import staff_login as logins
from cadence.web.console.auth import Admin, Viewer, form_field, session_policy, set_session_cookie
from cadence.web.console.login import _agent, _field_message, _limited
from cadence.web.console.pages import SubscriberId as UserId
from cadence.web.console.render import page, redirect
from cadence.web.security import client_ip
from cadence.web.state import State

router = APIRouter(prefix="/admin", include_in_schema=False)


def _users_page(
    request: Request,
    state: State,
    me: accounts.StaffIdentity,
    *,
    link: accounts.SetupLink | None = None,
    error: str = "",
    status: int = 200,
) -> Response:
    with state.session() as session:
        users = accounts.list_users(session)
    context = {
        "users": users,
        "roles": accounts.ROLES,
        "error": error,
        "link": link.url(state.settings.base_url) if link else "",
        "link_email": link.email if link else "",
        "link_expires": link.expires_at if link else None,
    }
    return page(request, "users.html", context, me=me, status=status)


@router.get("/users")
def users(request: Request, state: State, me: Admin) -> Response:
    return _users_page(request, state, me)


@router.post("/users")
def add_user(
    request: Request,
    state: State,
    me: Admin,
    email: Annotated[str, form_field("email", 400)],
    role: Annotated[str, form_field("role", 20, "viewer")],
) -> Response:
    try:
        with state.session() as session:
            link = accounts.add_user(session, email, role, actor=me.actor, now=state.now())
    except InputError as exc:
        return _users_page(request, state, me, error=_field_message(exc), status=400)
    return _users_page(request, state, me, link=link)


@router.post("/users/{user_id}/disable")
def disable_user(request: Request, state: State, me: Admin, user_id: UserId) -> Response:
    try:
        with state.session() as session:
            accounts.disable_user(session, accounts.user_email(session, user_id), actor=me.actor, now=state.now())
    except NotFound as exc:
        return _users_page(request, state, me, error=str(exc), status=404)
    except InputError as exc:
        return _users_page(request, state, me, error=_field_message(exc), status=400)
    return redirect("/admin/users")


@router.post("/users/{user_id}/reset")
def reset_user(request: Request, state: State, me: Admin, user_id: UserId) -> Response:
    try:
        with state.session() as session:
            link = accounts.reset_user(session, accounts.user_email(session, user_id), actor=me.actor, now=state.now())
    except NotFound as exc:
        return _users_page(request, state, me, error=str(exc), status=404)
    return _users_page(request, state, me, link=link)


def _account_page(
    request: Request,
    me: accounts.StaffIdentity,
    *,
    error: str = "",
    done: str = "",
    status: int = 200,
    secret: str = "",
) -> Response:
    # A failed attempt keeps the key the person already put in their app.
    secret = "" if me.totp else (secret if len(secret) == 32 else logins.new_totp_secret())
    context = {
        "error": error,
        "done": done,
        "secret": secret,
        "totp_uri": logins.totp_uri(secret, me.email) if secret else "",
    }
    return page(request, "account.html", context, me=me, status=status)


def _guessing(request: Request, state: State, me: accounts.StaffIdentity) -> Response | None:
    """The forms that check the current password count against the login form's limits (per
    account and per IP, login._limited): otherwise a session cookie, on a workstation left
    unlocked, could guess the password at tens of tries a second (hostile review). A 429 page
    while over them; the session itself goes on."""
    wait = _limited(request, state, me.email)
    if not wait:
        return None
    minutes = max(1, -(-wait // 60))
    error = f"Too many password attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
    response = _account_page(request, me, error=error, status=429)
    response.headers["Retry-After"] = str(wait)
    return response


@router.get("/account")
def account(request: Request, me: Viewer, done: str = "") -> Response:
    return _account_page(request, me, done=done)


@router.post("/account/password")
def change_password(
    request: Request,
    state: State,
    me: Viewer,
    current_password: Annotated[str, form_field("current_password", 2000)],
    password: Annotated[str, form_field("password", 2000)],
    confirm: Annotated[str, form_field("confirm", 2000)],
) -> Response:
    if (limited := _guessing(request, state, me)) is not None:
        return limited
    try:
        with state.session() as session:
            started = logins.change_password(
                session,
                me,
                current_password,
                password,
                confirm,
                now=state.now(),
                policy=session_policy(state),
                ip=client_ip(request),
                agent=_agent(request),
            )
    except InputError as exc:
        return _account_page(request, me, error=_field_message(exc), status=400)
    response = redirect("/admin/account?done=password")
    set_session_cookie(response, state, started.token)  # every other session ended
    return response


@router.post("/account/totp")
def enable_totp(
    request: Request,
    state: State,
    me: Viewer,
    secret: Annotated[str, form_field("secret", 64)],
    code: Annotated[str, form_field("code", 20)],
    current_password: Annotated[str, form_field("current_password", 2000)],
) -> Response:
    if (limited := _guessing(request, state, me)) is not None:
        return limited
    try:
        with state.session() as session:
            logins.enable_totp(session, me, secret, code, password=current_password, now=state.now())
    except InputError as exc:
        return _account_page(request, me, error=_field_message(exc), status=400, secret=secret)
    return redirect("/admin/account?done=totp-on")


@router.post("/account/totp/remove")
def disable_totp(
    request: Request, state: State, me: Viewer, current_password: Annotated[str, form_field("current_password", 2000)]
) -> Response:
    if (limited := _guessing(request, state, me)) is not None:
        return limited
    try:
        with state.session() as session:
            logins.disable_totp(session, me, current_password, now=state.now())
    except InputError as exc:
        return _account_page(request, me, error=_field_message(exc), status=400)
    return redirect("/admin/account?done=totp-off")
