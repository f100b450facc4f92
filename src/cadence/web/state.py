"""What every request handler shares: settings, the runtime, limiter, CSRF, templates.

One :class:`WebState` per app, stored on ``app.state.cadence``; handlers get it with the
``get_state`` dependency. Also the few helpers the page and API routes have in common.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.responses import Response

from cadence.config import Settings
from cadence.db.session import transaction
from cadence.runtime import Runtime
from cadence.tokens import read_token
from cadence.web.ratelimit import Limit, Limiter, RateLimited
from cadence.web.security import Csrf, client_ip
from cadence.web.subscription import (
    Confirmation,
    ConfirmResult,
    confirm,
    release_confirmation_limit,
    send_confirmation,
    signup_campaign,
)

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")


@dataclass(frozen=True)
class WebLimits:
    """Per-IP POST limit (429 beyond it). The per-address confirmation limit is in subscription.py."""

    posts_per_ip: Limit = field(default_factory=lambda: Limit(20, 60))
    # Every signup answer takes at least this long, so response times do not tell a new address
    # (an INSERT) from a known one (an early return): ~5 ms against ~3 ms on SQLite, measured.
    signup_floor_seconds: float = 0.05


@dataclass
class WebState:
    settings: Settings
    runtime: Runtime
    limiter: Limiter
    limits: WebLimits
    csrf: Csrf
    templates: Jinja2Templates
    clinic: dict[str, str] = field(default_factory=dict)  # name, city, address for the page frame
    # One SMTP connection is shared by the request threads that send confirmation emails.
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> datetime:
        return self.runtime.clock.now()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with transaction(self.settings.database_url) as session:
            yield session

    def send_confirmation(self, confirmation: Confirmation) -> None:
        """Send after the response went out (a Starlette background task), so the response time
        does not tell a new address from a known one. A failure frees the hourly limit."""
        try:
            with self.send_lock:
                sent = send_confirmation(self.runtime, confirmation, self.now())
        except Exception:  # the web process must survive a broken transport; say what broke
            log.exception("confirmation email for subscriber %s failed", confirmation.subscriber_id)
            sent = False
        if not sent:
            with self.session() as session:
                release_confirmation_limit(session, confirmation.subscriber_id, confirmation.signup_id)

    def confirm(self, request: Request, token: str) -> tuple[ConfirmResult, Any]:
        """Confirm the signup a ``confirm`` link names, recording the request's IP and user agent
        as the consent evidence; (the result, the token's payload). TokenError if invalid."""
        payload = read_token(self.settings.secret_key, "confirm", token)
        with self.session() as session:
            result = confirm(
                session,
                payload,
                self.now(),
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent", ""),
                campaign=signup_campaign(self.runtime),
            )
        return result, payload

    def pad_signup(self, started: float) -> None:
        """Sleep until `signup_floor_seconds` have passed since `started` (time.monotonic())."""
        remaining = self.limits.signup_floor_seconds - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        *,
        status: int = 200,
        forms: bool = False,
        background: BackgroundTask | None = None,
    ) -> Response:
        """A page. With `forms`, a CSRF token for them (and the cookie it is bound to, if the
        browser has none yet); without, no cookie is set (the RFC 8058 responses among them)."""
        page: dict[str, Any] = {"base_url": self.settings.base_url, "clinic": self.clinic, **(context or {})}
        fresh = None
        if forms:
            page["csrf_token"], fresh = self.csrf.token(request)
        response = self.templates.TemplateResponse(request, name, page, status_code=status, background=background)
        if fresh is not None:
            self.csrf.set_cookie(response, fresh)
        return response


DEFAULT_CLINIC = {
    "name": "Precision Clinical Bodywork",
    "city": "Richmond, Virginia",
    "postal_address": "1801 W Main St, Suite 200, Richmond, VA 23220",
    "phone": "",
}


def clinic_details(runtime: Runtime, campaign_id: str) -> dict[str, str]:
    """The clinic's name and address for the page frame, from the signup campaign's context
    (``context.clinic`` in its YAML) so pages and emails say the same thing."""
    from cadence.errors import CadenceError

    try:
        found = runtime.catalog.get(campaign_id).context.get("clinic", {})
    except CadenceError:
        found = {}
    return {key: str(found.get(key) or default) for key, default in DEFAULT_CLINIC.items()}


def get_state(request: Request) -> WebState:
    state: WebState = request.app.state.cadence
    return state


# The route parameter every web module takes: ``state: State``.
State = Annotated[WebState, Depends(get_state)]


def limit_posts(request: Request) -> None:
    """Dependency: count this POST against the client's per-IP limit."""
    state = get_state(request)
    wait = state.limiter.hit(f"post:{client_ip(request)}", state.limits.posts_per_ip)
    if wait:
        raise RateLimited(wait)
