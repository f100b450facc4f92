"""What every request handler shares: settings, the runtime, limiter, CSRF, templates.

One :class:`WebState` per app, stored on ``app.state.cadence``; handlers get it with the
``get_state`` dependency. Also the few helpers the page and API routes have in common.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.background import BackgroundTask
from starlette.responses import Response

from cadence.config import Settings
from cadence.core.sender import Sender
from cadence.core.signup_forms import SignupForm
from cadence.core.subscriber_fields import email_key
from cadence.core.suppression_keys import SuppressionKeys
from cadence.operations.runtime import Runtime
from cadence.operations.signup import (
    Confirmation,
    ConfirmResult,
    Joining,
    SignupContext,
    SignupData,
    confirm,
    joining_for,
    read_confirmation_token,
    record_signup,
    release_confirmation_limit,
)
from cadence.operations.transactional import send_transactional as queue_and_send
from cadence.operations.work import Session, transaction
from cadence.web.ratelimit import Limit, Limiter, RateLimited
from cadence.web.security import Csrf, client_ip, rate_limit_key

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")


@dataclass(frozen=True)
class WebLimits:
    """Per-IP POST limit (429 beyond it). The per-address confirmation limit is in operations/signup.py."""

    posts_per_ip: Limit = field(default_factory=lambda: Limit(20, 60))
    # Emailed links (manage, data) per address: enough for a lost email, too few to flood anyone.
    links_per_address: Limit = field(default_factory=lambda: Limit(3, 3600))
    # Confirmation emails to other spellings of one mailbox (victim+1@, v.ictim@gmail.com; see
    # mailbox_key): the per-address limit alone let one client send 20 a minute into one inbox.
    confirmations_per_mailbox: Limit = field(default_factory=lambda: Limit(3, 3600))
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
    sender: Sender  # campaigns/sender.yaml: the page frame, and the From of our emails
    forms: dict[str, SignupForm]  # campaigns/forms/*.yaml by name: /subscribe/<name>
    default_form: SignupForm  # what /subscribe and the JSON API serve
    # One SMTP connection is shared by the request threads that send confirmation emails.
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def suppression_keys(self) -> SuppressionKeys:
        return SuppressionKeys.from_settings(self.settings)

    def now(self) -> datetime:
        return self.runtime.clock.now()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with transaction(self.settings.database_url) as session:
            yield session

    def mailbox_limited(self, kind: str, address: str, limit: Limit) -> int:
        """Count one `kind` email to the mailbox of `address` (:func:`mailbox_key`); seconds to
        wait if over `limit`. The key is an HMAC, so Redis never holds the address."""
        digest = hmac.new(self.settings.secret_key.encode(), mailbox_key(address).encode(), hashlib.sha256)
        return self.limiter.hit(f"{kind}:{digest.hexdigest()[:32]}", limit)

    def send_confirmation(self, confirmation: Confirmation) -> None:
        """Send after the response went out (a Starlette background task), so the response time
        does not tell a new address from a known one; not at all for a sub-address or other
        spelling of a mailbox past its limit (the reply was the same). A failure or a skip frees
        the address's hourly limit."""
        # Only other spellings of a mailbox share its limit: the plain address keeps its own
        # one-an-hour, so nobody can stop a person signing up by spending it on victim+1@...
        variant = mailbox_key(confirmation.email) != email_key(confirmation.email)
        if variant and self.mailbox_limited("confirm", confirmation.email, self.limits.confirmations_per_mailbox):
            log.info("confirmation email skipped: too many to one mailbox this hour")
            with self.session() as session:
                release_confirmation_limit(session, confirmation.subscriber_id, confirmation.signup_id)
            return
        form = self.forms.get(confirmation.form, self.default_form)
        try:
            with self.send_lock:
                sent = bool(queue_and_send(self.runtime, "confirm", confirmation.subscriber_id, form.name))
        except Exception:  # the web process must survive a broken transport; say what broke
            log.exception("confirmation email for subscriber %s failed", confirmation.subscriber_id)
            sent = False
        if not sent:
            with self.session() as session:
                release_confirmation_limit(session, confirmation.subscriber_id, confirmation.signup_id)

    def form_of_signup(self, name: str) -> SignupForm:
        """The form a signup was made on; the default one for signups from before forms were
        files (no name recorded) or from a form since removed."""
        return self.forms.get(name, self.default_form)

    def joining(self, form_name: str) -> Joining:
        """What confirming a signup of `form_name` joins (operations.signup.confirm asks)."""
        return joining_for(self.form_of_signup(form_name), self.runtime.catalog)

    def confirm(self, request: Request, token: str) -> tuple[ConfirmResult, Any]:
        """Confirm the signup a ``confirm`` link names, recording the request's IP and user agent
        as the consent evidence; (the result, the token's payload). TokenError if invalid."""
        payload = read_confirmation_token(self.settings.secret_key, token, self.now())
        with self.session() as session:
            result = confirm(
                session,
                payload,
                self.now(),
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent", ""),
                keys=self.suppression_keys,
                joins=self.joining,
            )
        return result, payload

    def sign_up(self, data: SignupData, where: SignupContext, background: BackgroundTasks) -> None:
        """Record a signup (the page's and the API's one way) and queue its confirmation email
        after the response (see ``send_confirmation``); nothing is queued when the signup
        changes nothing (already subscribed, suppressed, limited)."""
        confirmation = record_signup(
            self.settings.database_url,
            data,
            where,
            self.now(),
            secret_key=self.settings.secret_key,
            keys=self.suppression_keys,
        )
        if confirmation is not None:
            background.add_task(self.send_confirmation, confirmation)

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
        page: dict[str, Any] = {
            "base_url": self.settings.base_url, "clinic": self.sender.clinic(),
            "signup": self.default_form.page,
            **(context or {}),
        }
        fresh = None
        if forms:
            page["csrf_token"], fresh = self.csrf.token(request)
        response = self.templates.TemplateResponse(request, name, page, status_code=status, background=background)
        if fresh is not None:
            self.csrf.set_cookie(response, fresh)
        return response


_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox_key(address: str) -> str:
    """The inbox `address` lands in, as far as we can tell: lowercased, without a ``+tag``
    (sub-addressing, RFC 5233; every large provider delivers ``a+x@`` to ``a@``), and for Gmail
    without dots. For rate limits only: two people who share a key share a limit, nothing more."""
    local, _, domain = email_key(address).rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in _DOTLESS_DOMAINS:
        local, domain = local.replace(".", ""), _DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"


def get_state(request: Request) -> WebState:
    state: WebState = request.app.state.cadence
    return state


# The route parameter every web module takes: ``state: State``.
State = Annotated[WebState, Depends(get_state)]


def limit_posts(request: Request) -> None:
    """Dependency: count this POST against the client's per-IP limit (IPv6: per /64)."""
    state = get_state(request)
    key = rate_limit_key(client_ip(request), state.settings.rate_limit_ipv6_prefix)
    wait = state.limiter.hit(f"post:{key}", state.limits.posts_per_ip)
    if wait:
        raise RateLimited(wait)
