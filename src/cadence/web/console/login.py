"""Console login (password, then the TOTP code if the user has one), setup links, logout.

Login limits (OWASP Authentication Cheat Sheet, "Login throttling"): 5 attempts per account and
20 per client address in 15 minutes, counted before the password is checked, with the same
answer whether or not the account exists (the account counter is keyed by an HMAC of what was
typed, so an unknown address is limited exactly like a known one). The counters are the
subscriber pages' (web/ratelimit.py): Redis when configured, in-process otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from cadence.errors import InputError, TokenError
from cadence.operations import staff_accounts as accounts
from cadence.operations import staff_login as logins
from cadence.web.console.auth import (
    Anyone,
    Pending,
    clear_session_cookie,
    form_field,
    session_policy,
    set_session_cookie,
)
from cadence.web.console.render import page, redirect
from cadence.web.ratelimit import Limit
from cadence.web.security import client_ip, rate_limit_key
from cadence.web.state import State

router = APIRouter(prefix="/admin", include_in_schema=False)

LOGIN_PER_ACCOUNT = Limit(5, 900)
LOGIN_PER_IP = Limit(20, 900)
TOTP_PER_USER = Limit(5, 900)


def _limited(request: Request, state: State, email: str) -> int:
    """Count one login attempt; seconds to wait if over either limit (both are counted)."""
    key = rate_limit_key(client_ip(request), state.settings.rate_limit_ipv6_prefix)
    digest = hmac.new(state.settings.secret_key.encode(), email.strip().lower().encode(), hashlib.sha256)
    by_ip = state.limiter.hit(f"console-login-ip:{key}", LOGIN_PER_IP)
    by_account = state.limiter.hit(f"console-login-account:{digest.hexdigest()[:32]}", LOGIN_PER_ACCOUNT)
    return max(by_ip, by_account)


# Where a login may lead back to: only the composer's own pages (a session that ended while
# writing), matched whole, so no value can make the login an open redirect (OWASP "Unvalidated
# Redirects and Forwards"). Anything else goes to the dashboard as before.
_RETURN_TO = re.compile(r"^/admin/newsletters(?:/[a-z0-9][a-z0-9_-]{0,99})?$")


def return_to(value: str) -> str:
    """`value` if it is a page a login may lead back to, else ""."""
    return value if _RETURN_TO.fullmatch(value) else ""


def _after_login(value: str) -> str:
    return return_to(value) or "/admin"


def _agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:300]


@router.get("/login")
def login_form(request: Request, me: Anyone, done: str = "", next: str = "") -> Response:
    if me is not None and me.stage == "full":
        return redirect(_after_login(next))
    return page(request, "login.html", {"done": done, "next": return_to(next)})


@router.post("/login")
def login(
    request: Request,
    state: State,
    me: Anyone,
    email: Annotated[str, form_field("email", 400)],
    password: Annotated[str, form_field("password", 2000)],
    next: Annotated[str, form_field("next", 200)],
) -> Response:
    back = return_to(next)
    wait = _limited(request, state, email)
    if wait:
        minutes = max(1, -(-wait // 60))
        message = f"Too many login attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        response = page(request, "login.html", {"error": message, "email": email, "next": back}, status=429)
        response.headers["Retry-After"] = str(wait)
        return response
    with state.session() as session:
        if me is not None:  # a new session id at every login (session fixation)
            logins.logout(session, me, now=state.now())
        started = logins.login(
            session,
            email,
            password,
            now=state.now(),
            policy=session_policy(state),
            ip=client_ip(request),
            agent=_agent(request),
        )
    if started is None:
        failed = {"error": str(accounts.LoginFailed()), "email": email, "next": back}
        return page(request, "login.html", failed, status=401)
    if started.stage == "password":
        response = redirect("/admin/login/code" + (f"?next={quote(back, safe='/')}" if back else ""))
    else:
        response = redirect(_after_login(back))
    set_session_cookie(response, state, started.token)
    return response


@router.get("/login/code")
def code_form(request: Request, me: Pending, next: str = "") -> Response:
    if me.stage == "full":
        return redirect(_after_login(next))
    return _code_page(request, me, next=return_to(next))


def _code_page(
    request: Request, me: accounts.StaffIdentity, error: str = "", status: int = 200, *, next: str = ""
) -> Response:
    # The half-way session's token for the form; no menu (me.may() is False for every entry).
    return page(request, "code.html", {"error": error, "next": next}, me=me, status=status)


@router.post("/login/code")
def code(
    request: Request,
    state: State,
    me: Pending,
    code: Annotated[str, form_field("code", 20)],
    next: Annotated[str, form_field("next", 200)],
) -> Response:
    back = return_to(next)
    if me.stage == "full":
        return redirect(_after_login(back))
    # Per user, not per session: logging in again must not buy another five guesses.
    if state.limiter.hit(f"console-totp:{me.user_id}", TOTP_PER_USER):
        with state.session() as session:
            logins.logout(session, me, now=state.now())
        response = page(request, "login.html", {"error": "Too many wrong codes. Log in again."}, status=429)
        clear_session_cookie(response, state)
        return response
    with state.session() as session:
        started = logins.verify_totp(
            session,
            me,
            code,
            now=state.now(),
            policy=session_policy(state),
            ip=client_ip(request),
            agent=_agent(request),
        )
    if started is None:
        wrong = "That code is not right. Use the newest code from your authenticator app."
        return _code_page(request, me, wrong, 401, next=back)
    response = redirect(_after_login(back))
    set_session_cookie(response, state, started.token)
    return response


@router.post("/logout")
def logout(request: Request, state: State, me: Pending) -> Response:
    with state.session() as session:
        logins.logout(session, me, now=state.now())
    response = redirect("/admin/login?done=logout")
    clear_session_cookie(response, state)
    return response


@router.get("/setup/{token}")
def setup_form(request: Request, state: State, token: str, me: Anyone) -> Response:
    try:
        with state.session() as session:
            email = accounts.setup_user(session, token, state.now())
    except TokenError as exc:
        return page(request, "message.html", {"title": "This link does not work", "message": str(exc)}, status=404)
    return page(request, "setup.html", {"email": email, "token": token})


@router.post("/setup/{token}")
def setup(
    request: Request,
    state: State,
    token: str,
    me: Anyone,
    password: Annotated[str, form_field("password", 2000)],
    confirm: Annotated[str, form_field("confirm", 2000)],
) -> Response:
    try:
        with state.session() as session:
            accounts.complete_setup(session, token, password, confirm, now=state.now())
    except TokenError as exc:
        return page(request, "message.html", {"title": "This link does not work", "message": str(exc)}, status=404)
    except InputError as exc:
        with state.session() as session:
            email = accounts.setup_user(session, token, state.now())
        return page(request, "setup.html", {"email": email, "token": token, "error": _field_message(exc)}, status=400)
    return redirect("/admin/login?done=setup")


def _field_message(exc: InputError) -> str:
    """'password: use at least 12 characters' → 'Use at least 12 characters.'"""
    text = str(exc).split(": ", 1)[-1]
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
