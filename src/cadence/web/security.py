"""Security headers on every response, and CSRF protection for our HTML forms.

Headers (OWASP Secure Headers Project): a Content-Security-Policy of ``default-src 'self'`` with
no ``'unsafe-inline'`` (our pages have no inline script or style, and no JavaScript at all),
``frame-ancestors 'none'`` plus ``X-Frame-Options: DENY`` against clickjacking, ``nosniff``,
``Referrer-Policy: strict-origin`` (our URLs carry tokens: a linked site learns our origin, never
the path; not ``no-referrer``, under which browsers send ``Origin: null`` with our own form posts,
Fetch standard §3.2.5 "serializing a request origin", and the Origin check below loses its value)
and ``Cache-Control: no-store`` on everything but static files (the pages show personal data).
The middleware wraps the whole application, the error handlers included.

CSRF: the signed double-submit cookie pattern (OWASP CSRF Prevention Cheat Sheet). The browser
gets a random value in an HttpOnly, SameSite=Lax cookie (``__Host-`` prefixed on HTTPS); each
form carries that value signed with itsdangerous under its own salt, with a time limit. A POST
is accepted only if the field verifies and matches the cookie, and, when the browser sends an
Origin header, only from our own origin. The RFC 8058 one-click POST is exempt by design: mail
providers send it without cookies, and the unguessable token in the URL is the authorisation.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cadence.errors import InputError

CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'"
)
_CSRF_MAX_AGE = 12 * 3600  # a form left open over lunch still works; a day-old one does not


class CsrfError(InputError):
    """A form POST without a valid CSRF token (or from another origin)."""


def base_headers(https: bool) -> list[tuple[str, str]]:
    headers = [
        ("Content-Security-Policy", CSP + ("; upgrade-insecure-requests" if https else "")),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "strict-origin"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
    ]
    if https:
        headers.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    return headers


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers above unless a route set its own (the web view
    sends a CSP listing the hashes of the email's inline styles)."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = base_headers(https)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    if name not in headers:
                        headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "public, max-age=3600" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Csrf:
    """Issue and check CSRF tokens bound to a per-browser cookie (see the module docstring)."""

    def __init__(self, secret_key: str, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.origin = f"{parts.scheme}://{parts.netloc}".lower()
        self.cookie = "__Host-cadence_csrf" if self.https else "cadence_csrf"
        self._serializer = URLSafeTimedSerializer(secret_key, salt="cadence.csrf")

    def token(self, request: Request) -> tuple[str, str | None]:
        """A token for a form on this page, and a new cookie value to set (None: keep the
        browser's)."""
        nonce = request.cookies.get(self.cookie, "")
        fresh = None
        if len(nonce) < 32:
            nonce = fresh = secrets.token_urlsafe(32)
        return self._serializer.dumps(nonce), fresh

    def set_cookie(self, response: Response, nonce: str) -> None:
        response.set_cookie(
            self.cookie, nonce, httponly=True, secure=self.https, samesite="lax", path="/", max_age=None
        )

    def verify(self, request: Request, token: str) -> None:
        origin = request.headers.get("origin")
        # "null" comes from privacy-sensitive contexts; the token and cookie still have to match.
        if origin is not None and origin != "null" and origin.lower() != self.origin:
            raise CsrfError("csrf: the form was posted from another site")
        nonce = request.cookies.get(self.cookie, "")
        try:
            expected = self._serializer.loads(token, max_age=_CSRF_MAX_AGE)
        except BadData:
            raise CsrfError("csrf: the form is too old or was not ours") from None
        if not nonce or not isinstance(expected, str) or not hmac.compare_digest(expected, nonce):
            raise CsrfError("csrf: the form does not belong to this browser")


def client_ip(request: Request) -> str:
    """The client address as the server sees it. Behind a reverse proxy, uvicorn's
    ``--forwarded-allow-ips`` decides whose X-Forwarded-For is believed (cadence web option)."""
    return request.client.host if request.client else "unknown"
