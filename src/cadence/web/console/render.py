"""Rendering console pages: the console's frame, its navigation and the forms' CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from cadence.operations.staff_accounts import StaffIdentity
from cadence.web.console.auth import console_csrf
from cadence.web.state import get_state

NAV = (
    ("/admin", "Dashboard", "viewer"),
    ("/admin/campaigns", "Campaigns", "viewer"),
    ("/admin/newsletters", "Newsletters", "viewer"),
    ("/admin/subscribers", "Subscribers", "viewer"),
    ("/admin/imports", "Import", "viewer"),
    ("/admin/suppressions", "Suppressions and bounces", "viewer"),
    ("/admin/audit", "Audit log", "viewer"),
    ("/admin/users", "Users", "admin"),
    ("/admin/account", "Your account", "viewer"),
)


def page(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    me: StaffIdentity | None = None,
    status: int = 200,
) -> Response:
    """A console page. With `me`, the navigation and the session's CSRF token for its forms;
    without (login, setup), the console's double-submit token (auth.ConsoleCsrf) and its cookie."""
    state = get_state(request)
    ctx: dict[str, Any] = {"me": me, "path": request.url.path, **(context or {})}
    fresh = None
    if me is not None:
        ctx["csrf_token"] = me.csrf_token
        ctx["nav"] = [(href, label) for href, label, role in NAV if me.may(role)]
    else:
        ctx["csrf_token"], fresh = console_csrf(request).token(request)
        ctx["nav"] = []
    response = state.templates.TemplateResponse(request, f"console/{name}", ctx, status_code=status)
    if fresh is not None:
        console_csrf(request).set_cookie(response, fresh)
    return response


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def done_redirect(path: str, me: StaffIdentity, sentence: str) -> RedirectResponse:
    """Post/redirect/get (a reload repeats nothing) with the sentence that says what happened.
    It rides in the query signed with the session's CSRF token, so a link from elsewhere cannot
    make the console show words of its choosing (content spoofing, OWASP WSTG-CLNT-03)."""
    sentence = sentence[:300]
    return redirect(f"{path}?{urlencode({'done': sentence, 'sig': _sign(me, sentence)})}")


def done_text(me: StaffIdentity, done: str, sig: str) -> str:
    """The sentence of :func:`done_redirect`, or "" if it was not signed for this session."""
    return done if done and hmac.compare_digest(sig.encode(), _sign(me, done).encode()) else ""


def _sign(me: StaffIdentity, text: str) -> str:
    return hmac.new(me.csrf_token.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]


# Setup links carry a one-time token in the path: like the subscriber pages' tokens
# (web/security.RedactTokens), it must never reach an access log.
_SETUP_PATH = re.compile(r"^(/admin/setup/)[^/?#\s]+")


class RedactSetupTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _SETUP_PATH.sub(r"\1[token]", args[2]), *args[3:])
        return True


def redact_setup_links() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSetupTokens) for f in logger.filters):
        logger.addFilter(RedactSetupTokens())
