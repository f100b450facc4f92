"""Request bodies: capped before anything parses them, and JSON checked before FastAPI sees it.

A hostile review (issue 10) sent a 10 MB body to ``/api/subscribe`` (it came back as a 40 MB
422) and JSON that Python's parser accepts but nothing after it can handle: ``NaN`` and
``Infinity`` (not JSON at all, RFC 8259 §6, and our JSON replies refuse to write them back),
a lone surrogate ``"\\ud800"`` (not Unicode: encoding it for the reply or the database fails)
and 100,000 nested arrays (``RecursionError``). Each was a 500. :class:`BodyGuard` answers
them first, as one-line 4xx replies:

- **413** when ``Content-Length`` or the bytes actually received pass the limit for the path:
  :data:`FORM_LIMIT` for pages and the API (the largest honest signup is under 1 KB),
  :data:`WEBHOOK_LIMIT` for ``/webhooks/*`` (a provider's bounce can quote the message),
  :data:`COMPOSER_LIMIT` for the console's newsletter composer (a whole issue's text);
- nothing at all when the client disconnects before its body is complete: the part that
  arrived is never handed to the app as if it were the whole request (what Starlette's own
  ``ClientDisconnect`` guarantees, and this replay must keep);
- **400** for a JSON body (``/api/*`` with a JSON content type, every ``/webhooks/*`` body: the
  webhook handlers parse whatever they get) that is not UTF-8, nests deeper
  than :data:`MAX_DEPTH`, holds ``NaN``/``Infinity`` or a lone surrogate, or is not JSON.

The nesting is measured by regex passes over the text before ``json.loads`` runs (:func:`_too_deep`), so no
recursion happens on hostile input; the checked body is then replayed to the app unchanged.

- **streamed uploads** (the console's CSV import, ``streamed`` paths): not buffered here, since
  a 1,000,000-row file is ~60 MB; they must declare a ``Content-Length`` within their own limit
  (411 without one, 413 over it: uvicorn then never passes more than that), and the route
  streams the body to disk itself (web/console/uploads.py).
- **408** (and the connection closed) when a body is sent too slowly (slowloris): no byte for
  :attr:`Deadlines.idle` seconds, or not complete within :attr:`Deadlines.total` (a form or JSON
  body) or :attr:`Deadlines.upload` (a streamed upload, whose half-written file the route then
  deletes). Without it one client sending a byte a minute held its request open forever.
- **deferred** bodies (``/admin/*`` POSTs, the console's forms; Postmark's webhook, whose
  credentials are headers): the checks above still apply,
  but the body is read only when the app asks for it, after the console's session, role and
  Origin checks (web/console/auth.py Access): an anonymous 2 MiB POST is refused before a byte
  of it is read (hostile review). A refusal is then raised as :class:`BodyRefused`, which the
  app answers like the replies here (app.py).
- **gated** bodies (the staff API's writes): a `gate` given by the app (web/staff_api.py
  ``refuse_without_token``) answers first, from the headers alone; a request without a valid
  token gets its 401 before a byte of its body is read or parsed (FastAPI parses a body before
  it runs any dependency, so the routes' own token check came after up to 2 MiB of JSON).
- **400** for a NUL character (U+0000) in the query string, a form, a JSON body or an API
  path (every method, GET included). PostgreSQL text cannot hold it, so psycopg raised
  ``DataError``: a 500 for the console's login form and search and most of the staff API
  (hostile review of issues 13/14). No field of ours takes it, and no person types it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cadence.core.newsletter_draft import MAX_BODY_CHARS

FORM_LIMIT = 8 * 1024
WEBHOOK_LIMIT = 1024 * 1024
# The console's newsletter composer posts a whole issue: a Markdown body of up to 100,000
# characters (operations/newsletter_drafts), percent-encoded, up to 12 bytes each (a 4-byte
# UTF-8 character as %XX%XX%XX%XX). Under the 8 KB of the other forms a long issue could never
# be saved (a 413 for text the operation would accept).
COMPOSER_LIMIT = 2 * 1024 * 1024
MAX_DEPTH = 32
# Arrays and objects in one API body. Parsing is the costly part of a body, and it runs on the
# event loop before any token is checked: 2 MB of "[]," made 690,000 lists, ~0.4 s of one core
# per anonymous request (hostile review). Our largest honest body, a newsletter draft with its
# audience rules, has a few dozen; a list of addresses is strings, not containers. The webhooks
# are left out (a provider's batch of events is one object per event, and their limit is 1 MB).
MAX_CONTAINERS = 10_000
_JSON_PATHS = ("/api/", "/webhooks/")


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    """The client sent its body too slowly (see :class:`Deadlines`)."""


class BodyRefused(Exception):
    """A deferred or streamed body the guard refused once the app asked for it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Deadlines:
    """How long a request body may take (Settings: CADENCE_BODY_IDLE_SECONDS, ...). `idle`: the
    longest wait for the next piece; `total`: a whole buffered body (2 MiB at most: 60 s is
    ~35 KB/s); `upload`: a whole streamed upload (the CSV import, 200 MB by default)."""

    idle: float = 15.0
    total: float = 60.0
    upload: float = 900.0


# An answer from the request's headers alone, or None to go on (see the module docstring).
Gate = Callable[[Scope], Awaitable[Response | None]]

SLOW_BODY = "the request body was sent too slowly: send it again"


class ClientGone(Exception):
    """The client hung up before sending the body its headers announced."""


# A newsletter's body is written in the composer or sent to the drafts API: an issue is easily
# longer than a form's 8 KB, so both take the composer's limit.
_NEWSLETTER_PATHS = ("/admin/newsletters", "/api/admin/newsletters", "/api/staff/newsletters")


# The staff API's bodies come only from token holders (the gate reads none before the token
# checks out), and its models allow more than 8 KB: 1,000 addresses to tag were refused 413
# (~28 KB) although TagsIn takes them (hostile review). Its limit is the composer's.
_STAFF_API_PATHS = ("/api/admin/", "/api/staff/")


def body_limit(path: str) -> int:
    if path.startswith(_NEWSLETTER_PATHS) or path.startswith(_STAFF_API_PATHS):
        return COMPOSER_LIMIT
    return WEBHOOK_LIMIT if path.startswith("/webhooks/") else FORM_LIMIT


def too_large(path: str, limit: int) -> str:
    """The 413's words: for a newsletter in what the writer counts (its body's characters; any
    100,000 characters fit in the limit, even as 12-byte percent-encoded emoji)."""
    if path.startswith(_NEWSLETTER_PATHS):
        return (
            f"the newsletter is too long to send here (over {limit // (1024 * 1024)} MiB): "
            f"its body can be at most {MAX_BODY_CHARS:,} characters"
        )
    return f"request body too large: at most {limit} bytes here"


def json_problem(body: bytes, *, nul_ok: bool = False) -> str | None:
    """Why `body` is not acceptable JSON (a one-line reason naming no input), or None. `nul_ok`
    for the webhooks: a provider's bounce may quote a message holding U+0000, and refusing it
    would lose the bounce (their handlers keep what they need, not the raw text)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "body: not UTF-8"
    try:
        if _too_deep(text, max_containers=None if nul_ok else MAX_CONTAINERS):
            return f"body: JSON nested deeper than {MAX_DEPTH} levels"
    except _TooMany:
        return f"body: more than {MAX_CONTAINERS:,} JSON arrays and objects"

    def no_constants(name: str) -> Any:
        raise ValueError(f"body: {name} is not a JSON number (RFC 8259 section 6)")

    try:
        value = json.loads(text, parse_constant=no_constants)
    except RecursionError:  # not expected after _too_deep; a 400, never a 500
        return f"body: JSON nested deeper than {MAX_DEPTH} levels"
    except ValueError as exc:
        message = str(exc)
        return message if message.startswith("body: ") else "body: not valid JSON"
    try:
        # Lone surrogates survive json.loads as str; encoding is where they fail. UTF-8 text
        # cannot hold one raw, so only a \uD800-\uDFFF escape makes one: without such an
        # escape the (2 MB: ~0.2 s) round trip is skipped.
        if "\\ud" in text or "\\uD" in text:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "body: a string holds a lone UTF-16 surrogate, which is not Unicode text"
    if not nul_ok and _holds_nul(text):
        return NUL_PROBLEM
    return None


NUL_PROBLEM = "a NUL character (U+0000) is not text: remove it"


# A JSON string cannot hold a raw U+0000 (RFC 8259 section 7: control characters must be
# escaped, and json.loads refuses them), so a NUL in parsed JSON was written as \u0000: an escape
# not itself escaped (preceded by an even number of backslashes). A regex over the text finds it
# at C speed; walking the parsed value cost ~0.2 s per 1,000,000-item list (hostile review).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _holds_nul(text: str) -> bool:
    """Whether parsed JSON `text` holds U+0000 in a string (key or value)."""
    return "\\u0000" in text and _NUL_ESCAPE.search(text) is not None  # the substring test is memchr-fast


def _nul_in_url(scope: Scope) -> bool:
    # The query string arrives raw ("%00", or a bare NUL byte); the path percent-decoded. A page
    # path with NUL stays the pages' 404 (tests/test_guide_pages.py): their path parameters are
    # signed tokens or names looked up in memory, while the API's reach the database as text.
    query = bytes(scope.get("query_string") or b"")
    path = str(scope.get("path", ""))
    return b"%00" in query or b"\x00" in query or ("\x00" in path and path.startswith("/api/"))


class _TooMany(Exception):
    pass


# JSON strings (RFC 8259 section 7, the unrolled-loop form: linear, no backtracking) and runs
# of anything that is not a bracket.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET_BYTES = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(text: str, *, max_containers: int | None = None) -> bool:
    """Whether ``[``/``{`` nest deeper than MAX_DEPTH outside strings, without recursion and at C
    speed (a regex, str.count, bytes.translate): this runs on the event loop before any
    authentication, for bodies up to the composer's 2 MB, and a character-by-character Python
    loop held the loop ~0.4 s per request (hostile review: an anonymous client could stall every
    other request). `max_containers`: raise _TooMany past that many arrays and objects. The brackets alone
    are left; each pass removes the innermost pairs, i.e. one level; still some after
    MAX_DEPTH passes means deeper. Unbalanced brackets stop shrinking: json.loads refuses them."""
    outside = _JSON_STRING.sub("", text)
    if max_containers is not None and outside.count("[") + outside.count("{") > max_containers:
        raise _TooMany
    # UTF-8 never uses an ASCII byte inside a longer character, so deleting bytes is exact.
    brackets = outside.encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKET_BYTES)
    for done in range(MAX_DEPTH):
        # One level exactly: "{[]}" must take two passes, so pairs become a mark first.
        shorter = brackets.replace(b"[]", b"x").replace(b"{}", b"x").replace(b"x", b"")
        if shorter == brackets:
            # Unbalanced: not JSON, but json.loads would still recurse into every unclosed
            # bracket before saying so ("[" * 100_000 was a RecursionError), so count them.
            return done + brackets.count(b"[") + brackets.count(b"{") > MAX_DEPTH
        brackets = shorter
    return bool(brackets)


class BodyGuard:
    """Pure ASGI middleware; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        streamed: dict[str, int] | None = None,
        *,
        deadlines: Deadlines | None = None,
        # The console (auth.Access) and Postmark's webhook (its Basic credentials) check the
        # request before they read its body; Mailgun's signature is in the body.
        deferred: tuple[str, ...] = ("/admin/", "/webhooks/postmark"),
        gates: Sequence[tuple[str, Gate]] = (),
    ) -> None:
        self.app = app
        self.gates = tuple(gates)  # (path prefix, gate)
        self.streamed = streamed or {}  # path -> its byte limit (see the module docstring)
        self.deadlines = deadlines or Deadlines()
        self.deferred = deferred  # path prefixes whose body is read when the app asks for it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _nul_in_url(scope):
            await _reply(send, 400, NUL_PROBLEM, str(scope.get("path", "")))
            return
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        for prefix, gate in self.gates:
            if path.startswith(prefix):
                answer = await gate(scope)
                if answer is not None:
                    await answer(scope, receive, send)
                    return
        limit = body_limit(path)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1").strip()
        deadlines = self.deadlines
        if path in self.streamed and scope["method"] == "POST":
            allowed = self.streamed[path]
            if not declared.isdigit():
                await _reply(send, 411, "an upload must declare its Content-Length", path)
            elif int(declared) > allowed:
                await _reply(send, 413, f"the file is too large: at most {allowed // (1024 * 1024)} MB", path)
            else:
                await self.app(scope, _timed(receive, deadlines.idle, deadlines.upload), send)
            return
        if declared.isdigit() and int(declared) > limit:
            await _reply(send, 413, too_large(path, limit), path)
            return
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        if path.startswith(self.deferred):
            await self.app(scope, _deferred(receive, path, limit, content_type, deadlines), send)
            return
        try:
            body = await _read_body(_timed(receive, deadlines.idle, deadlines.total), limit)
        except BodyTooLarge:
            await _reply(send, 413, too_large(path, limit), path)
            return
        except BodyTimeout:
            await _reply(send, 408, SLOW_BODY, path)
            return
        except ClientGone:
            # A body cut short is not a shorter request: "email=a@example.co" from a dropped
            # "...com" would sign up (and email) the wrong address. Nobody is left to answer.
            return
        problem = _body_problem(path, content_type, body)
        if problem is not None:
            await _reply(send, 400, problem, path)
            return
        await self.app(scope, _replay(body, receive), send)


def _body_problem(path: str, content_type: str, body: bytes) -> str | None:
    # The webhooks parse their body as JSON whatever its declared type; the API only when
    # it says JSON (FastAPI's strict content type refuses the rest itself).
    is_json = path.startswith("/webhooks/") or (path.startswith("/api/") and "json" in content_type)
    if body and is_json:
        problem = json_problem(body, nul_ok=path.startswith("/webhooks/"))
        if problem is not None:
            return problem
    if b"%00" in body and "application/x-www-form-urlencoded" in content_type:
        return NUL_PROBLEM
    return None


def _timed(receive: Receive, idle: float, total: float) -> Receive:
    """`receive`, raising BodyTimeout when the body's next piece takes more than `idle` seconds
    or the whole body more than `total`. Once the body is complete, plain `receive` again: a
    streamed download waits on it for the disconnect as long as it likes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + total
    complete = False

    async def timed() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        left = end - loop.time()
        if left <= 0:
            raise BodyTimeout
        try:
            async with asyncio.timeout(min(idle, left)):
                message = await receive()
        except TimeoutError:
            raise BodyTimeout from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return timed


def _deferred(receive: Receive, path: str, limit: int, content_type: str, deadlines: Deadlines) -> Receive:
    """The body read, checked and handed over whole on the app's first call, not before."""
    done = False

    async def deferred() -> Message:
        nonlocal done
        if done:
            return await receive()
        done = True
        try:
            body = await _read_body(_timed(receive, deadlines.idle, deadlines.total), limit)
        except BodyTooLarge:
            raise BodyRefused(413, too_large(path, limit)) from None
        except BodyTimeout:
            raise BodyRefused(408, SLOW_BODY) from None
        except ClientGone:
            # Never a shorter body (see above); the reply to this goes nowhere.
            raise BodyRefused(400, "the request body was cut short") from None
        problem = _body_problem(path, content_type, body)
        if problem is not None:
            raise BodyRefused(400, problem)
        return {"type": "http.request", "body": body, "more_body": False}

    return deferred


def refusal(status: int, detail: str, path: str) -> Response:
    """The reply to a BodyRefused or BodyTimeout raised in the app: as :func:`_reply` writes."""
    payload, media = _payload(detail, path)
    return Response(payload, status_code=status, media_type=media, headers={"Connection": "close"})


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as Starlette expects

    return replay


async def _reply(send: Send, status: int, detail: str, path: str) -> None:
    """JSON ``{"detail": ...}`` for the API and webhooks, one line of text for the pages."""
    payload, media_type = _payload(detail, path)
    media = media_type.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),  # the rest of an oversized body is not read
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _payload(detail: str, path: str) -> tuple[bytes, str]:
    if path.startswith(_JSON_PATHS):
        return json.dumps({"detail": detail}).encode(), "application/json"
    return f"{detail}\n".encode(), "text/plain; charset=utf-8"


# ---------------------------------------------------------------------------- validation replies

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def safe_validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as ``{"loc", "msg", "type"}`` without ``input`` or ``ctx`` (which
    repeat what was sent). A location part that is not a plausible field name (an unknown key
    someone sent) becomes ``"(unknown field)"``; messages are cut to 200 characters."""
    safe = []
    for error in errors:
        loc = [
            part if isinstance(part, int) or _FIELD_NAME.fullmatch(str(part)) else "(unknown field)"
            for part in error.get("loc", ())
        ]
        safe.append({"loc": loc, "msg": str(error.get("msg", ""))[:200], "type": str(error.get("type", ""))})
    return safe
