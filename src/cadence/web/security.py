"""Security headers on every response, and CSRF protection for our HTML forms.

Headers (OWASP Secure Headers Project): a Content-Security-Policy of ``default-src 'self'`` with
no ``'unsafe-inline'`` (our pages have no inline script or style, and no JavaScript at all),
``frame-ancestors 'none'`` plus ``X-Frame-Options: DENY`` against clickjacking, ``nosniff``,
``Referrer-Policy: strict-origin`` (our URLs carry tokens: a linked site learns our origin, never
the path; not ``no-referrer``, under which browsers send ``Origin: null`` with our own form posts,
Fetch standard §3.2.5 "serializing a request origin", and the Origin check below loses its value)
and ``Cache-Control: no-store`` on everything but static files (the pages show personal data).
The middleware wraps the whole application, the error handlers included. Every page but the
signup form and static files also gets ``X-Robots-Tag: noindex, nofollow`` (with the same meta
tag in the HTML): token pages must never reach a search index, even when someone posts a link.

Client address (:func:`client_ip`): the TCP peer, unless the peer is one of the proxies named in
``CADENCE_TRUSTED_PROXIES``; then ``X-Forwarded-For`` is read from the right, skipping trusted
proxies, and the first untrusted hop is the client (a client can prepend anything it likes to
the header; only what our own proxies appended is believed). Rate limits key that address with
:func:`rate_limit_key`: IPv4 by address, IPv6 by its /64 (``CADENCE_RATE_LIMIT_IPV6_PREFIX``),
because one subscriber line gets a whole /64 (RFC 6177) and can change addresses at will.

Access logs: :class:`RedactTokens` rewrites the paths uvicorn logs, so ``/p/<token>/...`` (which
works as a password) never reaches a log file.

CSRF: the signed double-submit cookie pattern (OWASP CSRF Prevention Cheat Sheet). The browser
gets a random value in an HttpOnly, SameSite=Lax cookie (``__Host-`` prefixed on HTTPS); each
form carries that value signed with itsdangerous under its own salt, with a time limit. A POST
is accepted only if the field verifies and matches the cookie, and, when the browser sends an
Origin header, only from our own origin. The RFC 8058 one-click POST is exempt by design: mail
providers send it without cookies, and the unguessable token in the URL is the authorisation.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cadence.errors import InputError

CSP = (
    "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'"
)
_CSRF_MAX_AGE = 12 * 3600  # a form left open over lunch still works; a day-old one does not
ROBOTS = "noindex, nofollow"
_INDEXABLE = ("/subscribe", "/")  # the public signup form; everything else is personal or useless
_INDEXABLE_PREFIXES = ("/guide/",)  # the campaigns' public guide pages (issue 11)


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
        path = str(scope.get("path", ""))
        static = path.startswith("/static/")
        robots = not static and path not in _INDEXABLE and not path.startswith(_INDEXABLE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    if name not in headers:
                        headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "public, max-age=3600" if static else "no-store"
                if robots:
                    headers["X-Robots-Tag"] = ROBOTS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadAsGet:
    """Pure ASGI middleware: ``HEAD`` answered as ``GET`` without the body (RFC 9110 §9.3.2;
    §9.1: every general-purpose server supports GET and HEAD). FastAPI routes answer only the
    methods they name, so every page said 405 to the link checkers and mail scanners that ask
    with HEAD. Our GETs change nothing (scanners GET every link too), except the open pixel
    (``/o/``), which records an open and so keeps its 405, and the click link (``/c/``), which
    has its own HEAD route that records no click."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or str(scope.get("path", "")).startswith(_OWN_HEAD):
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}  # Content-Length stays: the GET's (§9.3.2)
            await send(message)

        # A copy: the server keeps its own scope saying HEAD, so it sends no body either.
        await self.app({**scope, "method": "GET"}, receive, without_body)


_OWN_HEAD = ("/c/", "/o/")


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


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str, name: str = "CADENCE_TRUSTED_PROXIES") -> tuple[IpNetwork, ...]:
    """``"10.0.0.1, 192.168.0.0/16, ::1"`` → networks; ValueError naming `name` otherwise."""
    networks = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{name}: {item!r} is not an IP address or network (10.0.0.1, 10.0.0.0/8, ::1)") from None
    return tuple(networks)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443" (RFC 7239 style)
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:5555"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[IpNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def resolve_client_ip(peer: str, forwarded_for: Sequence[str], proxies: Sequence[IpNetwork]) -> str:
    """The client address for a connection from `peer` carrying these ``X-Forwarded-For``
    headers, believing only `proxies` (see the module docstring)."""
    current = _address(peer)
    if current is None:
        return peer or "unknown"
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    while _trusted(current, proxies) and hops:
        previous = _address(hops.pop())
        if previous is None:
            break  # garbage from a client behind our proxy: stop at the last address we trust
        current = previous
    return str(current)


def client_ip(request: Request) -> str:
    """The client address of `request` (see :func:`resolve_client_ip`), with the trusted
    proxies the app was created with (``app.state.trusted_proxies``)."""
    peer = request.client.host if request.client else ""
    proxies: Sequence[IpNetwork] = getattr(request.app.state, "trusted_proxies", ())
    return resolve_client_ip(peer, request.headers.getlist("x-forwarded-for"), proxies)


def rate_limit_key(ip: str, ipv6_prefix: int = 64) -> str:
    """IPv4 by address, IPv6 by its network of `ipv6_prefix` bits: the unit one client controls."""
    address = _address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/{ipv6_prefix}", strict=False))
    return str(address) if address is not None else ip


# ---------------------------------------------------------------------------- access logs

# A path segment after one of these prefixes is a token (or a link signature): a password.
# /admin/setup/<token> too: the console logs refused setup forms with this (hostile review).
_TOKEN_PATH = re.compile(
    r"^(/(?:api/)?(?:p|u|v|d|confirm|preferences|unsubscribe|data|admin/setup)/)[^/?#\s]+"
    r"|^(/c/\d+/\d+/)[^/?#\s]+"
    r"|^(/o/\d+/)[^/?#\s]+"
)


def redact_path(path: str) -> str:
    """`path` with its token replaced by ``[token]``: ``/p/abc.def/export`` → ``/p/[token]/export``."""
    return _TOKEN_PATH.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "[token]", path)


class RedactTokens(logging.Filter):
    """On uvicorn's access logger: its records are ``(client, method, path, version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def redact_access_logs() -> None:
    """Install :class:`RedactTokens` on ``uvicorn.access`` once per process."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())


def relative_slash_redirects(router: Router) -> None:
    """Redirect ``/admin/`` to ``/admin`` (and ``/x`` to ``/x/``) with a *relative* Location.

    Starlette's own slash redirect (``Router.redirect_slashes``) builds an absolute URL from the
    request's Host header, so behind a proxy that passes any Host, ``Host: evil.example`` turns
    our link into a redirect to evil.example (an open redirect, CWE-601; found in the console's
    security review, issue 14). A path-absolute reference is a valid Location (RFC 9110
    §10.2.2) that the browser resolves against the URL it asked for, whatever Host said. A path
    that would start with ``//`` (a network-path reference, i.e. another host) is never
    redirected: it is a 404.
    """
    router.redirect_slashes = False
    not_found = router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path not in ("", "/"):
            other = dict(scope)
            other["path"] = path.rstrip("/") if path.endswith("/") else path + "/"
            target = other["path"]
            safe = target.startswith("/") and not target.startswith(("//", "/\\"))
            if safe and any(route.matches(other)[0] is not Match.NONE for route in router.routes):
                query = scope.get("query_string", b"").decode("latin-1")
                location = quote(target, safe="/:@!$&'()*+,;=-._~") + (f"?{query}" if query else "")
                await Response(status_code=307, headers={"Location": location})(scope, receive, send)
                return
        await not_found(scope, receive, send)

    router.default = default
