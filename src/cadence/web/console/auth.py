"""Who may open which console route: one dependency, :class:`Access`, on every ``/admin`` route.

``Depends(Access(role))`` answers, before the handler runs:

- ``public`` (login, setup link): anyone; a POST must carry a signed double-submit CSRF token
  (:class:`ConsoleCsrf`, with a SameSite=Strict cookie: there is no session yet to bind one to).
- ``pending``: any live session, also one half-way through login (the TOTP step, logout).
- ``viewer`` / ``editor`` / ``admin``: a full session whose user has at least that role. A POST
  must also carry the session's synchronizer token (``csrf_token`` field), compared in constant
  time (OWASP CSRF Prevention Cheat Sheet), and come from our own origin if the browser says.

``Access(role, upload=True)`` (the CSV import's form) checks the session and role *before* the
body is read, then streams it to disk (uploads.py) and takes the CSRF token from it: a viewer's
or a stranger's upload is refused without being stored.

No session → a GET is sent to the login page, a POST gets 403; too low a role → 403. The check
runs on the server for every route and action, whatever buttons a page shows (issue 14), and
tests/test_console_web.py holds the table of every /admin route and its role, so a route added
without an Access fails that test.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from cadence.errors import InputError
from cadence.operations.staff_accounts import SessionPolicy, StaffIdentity, role_allows
from cadence.operations.staff_login import current_identity
from cadence.web.body_guard import COMPOSER_LIMIT
from cadence.web.security import Csrf, CsrfError
from cadence.web.state import WebState, get_state

LEVELS = ("public", "pending", "viewer", "editor", "admin")


class NotLoggedIn(InputError):
    """No live console session (none, expired, revoked, or the user was disabled)."""


class Forbidden(InputError):
    """A live session whose role is below what the route needs."""


class ConsoleCsrfError(CsrfError):
    """A console form without its token (answered with the console's 403 page)."""


def cookie_name(base_url: str) -> str:
    # RFC 6265bis §4.1.3.2: a __Host- cookie must be Secure, Path=/, without Domain: the browser
    # then refuses it from http:// and from sibling subdomains. Plain HTTP (local development)
    # cannot set a Secure cookie, so it gets a plain name.
    return "__Host-cadence_session" if base_url.startswith("https://") else "cadence_session"


def set_session_cookie(response: Response, state: WebState, token: str) -> None:
    https = state.settings.base_url.startswith("https://")
    # No Max-Age: the cookie dies with the browser; the server ends the session earlier anyway.
    response.set_cookie(
        cookie_name(state.settings.base_url), token, httponly=True, secure=https, samesite="lax", path="/"
    )


def clear_session_cookie(response: Response, state: WebState) -> None:
    https = state.settings.base_url.startswith("https://")
    response.delete_cookie(cookie_name(state.settings.base_url), path="/", secure=https, httponly=True, samesite="lax")


def session_policy(state: WebState) -> SessionPolicy:
    from datetime import timedelta

    settings = state.settings
    return SessionPolicy(timedelta(minutes=settings.admin_idle_minutes), timedelta(hours=settings.admin_session_hours))


def identity_of(request: Request, state: WebState) -> StaffIdentity | None:
    """The staff identity of this request's session cookie, or None."""
    if hasattr(request.state, "staff"):
        cached: StaffIdentity | None = request.state.staff
        return cached
    token = request.cookies.get(cookie_name(state.settings.base_url), "")
    found = None
    if token:
        with state.session() as session:
            found = current_identity(session, token, now=state.now(), policy=session_policy(state))
    request.state.staff = found
    return found


class ConsoleOriginError(ConsoleCsrfError):
    """A form posted from another origin than CADENCE_BASE_URL's. Besides an attack, the usual
    cause is the console opened at another address than the configured one (another port, a
    host name instead of 127.0.0.1): the page names the address to use."""

    def __init__(self, expected: str) -> None:
        super().__init__("csrf: the form was posted from another site")
        self.expected = expected


def _same_origin(request: Request, state: WebState) -> None:
    origin = request.headers.get("origin")
    parts = urlsplit(state.settings.base_url)
    expected = f"{parts.scheme}://{parts.netloc}"
    if origin is not None and origin != "null" and origin.lower() != expected.lower():
        raise ConsoleOriginError(expected)


class ConsoleCsrf(Csrf):
    """The signed double-submit token of the forms that come before a session (login, setup
    link): web/security.Csrf with a cookie of its own, SameSite=Strict (the console is never
    entered by a cross-site POST; a setup link opened from a mail client gets a fresh cookie on
    that first GET) and its own salt, so a subscriber-page token is no console token."""

    def __init__(self, secret_key: str, base_url: str) -> None:
        from itsdangerous import URLSafeTimedSerializer

        super().__init__(secret_key, base_url)
        self.cookie = "__Host-cadence_console_csrf" if self.https else "cadence_console_csrf"
        self._serializer = URLSafeTimedSerializer(secret_key, salt="cadence.console.csrf")

    def set_cookie(self, response: Response, nonce: str) -> None:
        response.set_cookie(self.cookie, nonce, httponly=True, secure=self.https, samesite="strict", path="/")


def console_csrf(request: Request) -> ConsoleCsrf:
    found: ConsoleCsrf = request.app.state.console_csrf
    return found


class Access:
    """The dependency; see the module docstring. ``role`` is read by the route-table test."""

    def __init__(self, role: str, *, upload: bool = False) -> None:
        if role not in LEVELS:
            raise ValueError(f"unknown console access level {role!r}")
        if upload and role in ("public", "pending"):
            raise ValueError("uploads need a logged-in role")
        self.role = role
        self.upload = upload

    def __repr__(self) -> str:
        return f"Access({self.role!r})"

    async def __call__(self, request: Request) -> StaffIdentity | None:
        state = get_state(request)
        posted = request.method == "POST"
        if posted and self.upload:
            return await self._upload(request, state)
        # Every check that needs no body comes before the body is read (the body guard defers
        # /admin bodies until here): an anonymous 2 MiB POST is refused unread (hostile review).
        if posted:
            _same_origin(request, state)
        if self.role == "public":
            if posted:
                csrf = console_csrf(request)
                if not request.cookies.get(csrf.cookie):
                    raise ConsoleCsrfError("csrf: the form does not belong to this browser")
                try:
                    csrf.verify(request, await _csrf_field(request))
                except CsrfError as exc:
                    raise ConsoleCsrfError(str(exc)) from None
            return identity_of(request, state)
        me = identity_of(request, state)
        if me is None or (me.stage != "full" and self.role != "pending"):
            raise NotLoggedIn("log in to the staff console")
        if self.role != "pending" and not role_allows(me.role, self.role):
            raise Forbidden(f"this needs the {self.role} role; you are {me.role}")
        if posted:
            token = await _csrf_field(request)
            if not (token and hmac.compare_digest(token.encode(), me.csrf_token.encode())):
                raise ConsoleCsrfError("csrf: the console form is missing its token or is from another session")
        return me

    async def _upload(self, request: Request, state: WebState) -> StaffIdentity:
        from cadence.web.console.uploads import receive_upload

        _same_origin(request, state)
        me = identity_of(request, state)
        if me is None or me.stage != "full":
            raise NotLoggedIn("log in to the staff console")
        if not role_allows(me.role, self.role):
            raise Forbidden(f"this needs the {self.role} role; you are {me.role}")
        settings = state.settings
        upload = await receive_upload(request, settings.imports_dir, settings.import_max_bytes)
        token = upload.value("csrf_token")
        if not (token and hmac.compare_digest(token.encode(), me.csrf_token.encode())):
            upload.discard()
            raise ConsoleCsrfError("csrf: the console form is missing its token or is from another session")
        request.state.upload = upload
        return me


async def read_form(request: Request) -> FormData:
    """The posted form (parsed once; Starlette keeps it on the request). Starlette's own cap of
    1 MB per field is lifted to the body's: the body guard has already capped the whole body
    (2 MiB for a newsletter), and a field's own limit is counted in characters by whoever
    checks it (a refusal names the field), not in percent-encoded bytes: 100,000 emoji are
    400 KB of UTF-8 but 1.2 MB as %F0%9F%98%80 each (hostile review)."""
    return await request.form(max_part_size=COMPOSER_LIMIT)


async def _csrf_field(request: Request) -> str:
    value = (await read_form(request)).get("csrf_token", "")
    return value if isinstance(value, str) else ""


class FormField:
    """One text field of a console form, as a dependency: declared after the route's Access
    parameter, it reads the body only once the session, role and CSRF checks have passed
    (FastAPI reads ``Form()`` parameters before any dependency runs). `max_length` is counted
    in characters; a longer value is an InputError naming the field."""

    def __init__(self, name: str, max_length: int, default: str = "") -> None:
        self.name = name
        self.max_length = max_length
        self.default = default

    async def __call__(self, request: Request) -> str:
        value = (await read_form(request)).get(self.name, self.default)
        text = value if isinstance(value, str) else ""
        if len(text) > self.max_length:
            raise InputError(f"{self.name}: at most {self.max_length:,} characters (this has {len(text):,})")
        return text


def form_field(name: str, max_length: int, default: str = "") -> Any:
    """``Annotated[str, form_field("tag", 200)]``: see :class:`FormField`."""
    return Depends(FormField(name, max_length, default))


PUBLIC = Access("public")
PENDING = Access("pending")
VIEWER = Access("viewer")
EDITOR = Access("editor")
ADMIN = Access("admin")

Viewer = Annotated[StaffIdentity, Depends(VIEWER)]
Editor = Annotated[StaffIdentity, Depends(EDITOR)]
Admin = Annotated[StaffIdentity, Depends(ADMIN)]
Pending = Annotated[StaffIdentity, Depends(PENDING)]
Anyone = Annotated[StaffIdentity | None, Depends(PUBLIC)]
