"""The subscriber-facing web app: sign up, confirm, unsubscribe (RFC 8058), preferences, web
view, click and open tracking, and the same actions as a JSON API under ``/api``.

``create_app(settings)`` builds it; ``cadence web`` serves it with uvicorn. Pages are rendered on
the server (Jinja2, ``web/templates``) with one stylesheet and no JavaScript, so the strict
Content-Security-Policy costs nothing. Routes are thin: they parse, call the plain functions of
``cadence.operations`` (signup, preferences, privacy) and ``operations/tracking.py``, and render.

The signup forms are data: every ``campaigns/forms/<name>.yaml`` is served at
``/subscribe/<name>``, the default one (CADENCE_DEFAULT_FORM, the only form, or the one marked
``default: true``) also at ``/subscribe`` and by the JSON API. The clinic's details in every
page come from the sender file (``campaigns/sender.yaml``, CADENCE_SENDER_FILE).

Map of the modules::

    app.py           create_app, error pages, security headers around everything
    pages.py         /subscribe[/<form>], /confirm/<t>, /u/<t>
    preferences.py   /p/<t> and its actions
    links.py         /c/..., /o/....gif, /v/<t>
    api.py           /api/...
    state.py         WebState shared by the routes, the per-IP limit dependency
    security.py      headers, CSRF, client IP, log redaction    ratelimit.py   per-IP counters
    body_guard.py    body size caps and read deadlines, JSON checks, validation replies that echo nothing
    serving.py       uvicorn's protocol with a deadline on each request head (cli/web.py uses it)
    manage.py        /manage, /p/<t>/data-link, /d/<t> (export and erase by emailed link)
    forms.py         request parsing: address, name, a form's answers, the API's models
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp

from cadence import __version__
from cadence.config import Settings, get_settings
from cadence.errors import InputError, TokenError
from cadence.files.forms import choose_default_form, load_forms, load_sender
from cadence.operations.runtime import Runtime
from cadence.web import (
    api,
    guide,
    links,
    manage,
    ops,
    pages,
    preferences,
    staff_api,
    staff_api_drafts,
    staff_api_sending,
)
from cadence.web.body_guard import (
    SLOW_BODY,
    BodyGuard,
    BodyRefused,
    BodyTimeout,
    Deadlines,
    Gate,
    refusal,
    safe_validation_errors,
)
from cadence.web.ratelimit import RateLimited, make_limiter
from cadence.web.security import (
    Csrf,
    CsrfError,
    HeadAsGet,
    SecurityHeaders,
    parse_networks,
    redact_access_logs,
    redact_path,
    relative_slash_redirects,
)
from cadence.web.state import STATIC_DIR, TEMPLATES_DIR, WebLimits, WebState, get_state

log = logging.getLogger(__name__)


class CadenceWeb(FastAPI):
    """FastAPI with the security headers as the outermost layer, so they are on every response,
    including the 500 page Starlette's ServerErrorMiddleware writes; inside them the body guard
    (caps and JSON checks, before anything parses a body), then HEAD answered as GET."""

    https = False
    streamed_uploads: dict[str, int] = {}  # noqa: RUF012 - set per app in create_app
    body_deadlines = Deadlines()
    body_gates: tuple[tuple[str, Gate], ...] = ()

    def build_middleware_stack(self) -> ASGIApp:
        guarded = BodyGuard(
            HeadAsGet(super().build_middleware_stack()),
            streamed=self.streamed_uploads,
            deadlines=self.body_deadlines,
            gates=self.body_gates,
        )
        return SecurityHeaders(guarded, https=self.https)


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, limits: WebLimits | None = None
) -> FastAPI:
    """The web app for `settings` (default: from the environment). `runtime` and `limits` are
    for tests and embedding; by default they come from the settings."""
    settings = settings or get_settings()
    runtime = runtime or Runtime.from_settings(settings)
    # Read once at start: a broken form or sender file stops `cadence web` with the file, line
    # and field, rather than serving a page that fails for every visitor.
    sender = load_sender(settings.sender_file)
    forms = load_forms(settings.forms_dir)
    default_form = choose_default_form(forms, settings.default_form)
    if runtime.enqueue is None and not settings.send_transactional_in_web:
        # A worker sends the confirmation and link emails this app queues (a send task per
        # email, after the request's commit); see Settings.send_transactional_in_web.
        from cadence.tasks import enqueue_send, make_celery

        runtime.enqueue = partial(enqueue_send, make_celery(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        runtime.close()  # the confirmation emails' SMTP connection

    app = CadenceWeb(
        title="Cadence subscriber API",
        version=__version__,
        summary="Sign up, confirm, unsubscribe and manage preferences for Cadence email courses.",
        docs_url=None,  # Swagger UI needs inline and third-party scripts our CSP forbids
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.https = settings.base_url.startswith("https://")
    app.body_deadlines = Deadlines(
        idle=settings.body_idle_seconds, total=settings.body_timeout_seconds, upload=settings.upload_timeout_seconds
    )
    app.state.trusted_proxies = parse_networks(",".join(settings.trusted_proxies))
    redact_access_logs()
    app.state.cadence = WebState(
        settings=settings,
        runtime=runtime,
        limiter=make_limiter(settings.redis_url),
        limits=limits or WebLimits(),
        csrf=Csrf(settings.secret_key, settings.base_url),
        templates=Jinja2Templates(directory=str(TEMPLATES_DIR)),
        sender=sender,
        forms=forms,
        default_form=default_form,
    )
    api_router = api.build_router(default_form, [forms[name] for name in sorted(forms)])
    for router in (pages.router, preferences.router, manage.router, links.router, api_router, ops.router):
        app.include_router(router)
    app.include_router(guide.router)  # /guide/<campaign>/<page>: the campaign's guide pages (issue 11)
    # /api/admin/...: tokens with scopes (issue 13 item 9); /api/staff/... the older name, kept
    # so scripts written against it keep working, but left out of /openapi.json: one documented
    # name, and the schema fuzz test (tests/test_web_api.py) does not run every route twice.
    # The staff API's token is checked before its body is read (body_guard.py, "gated").
    app.body_gates = tuple((prefix, partial(staff_api.refuse_without_token, app)) for prefix, _ in staff_api.PREFIXES)
    for prefix, documented in staff_api.PREFIXES:
        # The drafts first: /newsletters/drafts is not the newsletter named "drafts".
        for staff_router in (staff_api.router, staff_api_drafts.router, staff_api_sending.router):
            app.include_router(staff_router, prefix=prefix, include_in_schema=documented)
    webhooks = _optional_module("cadence.web.webhooks")
    if webhooks is not None:
        app.include_router(webhooks.router)
    console = _optional_module("cadence.web.console")  # /admin: the staff console (issue 14)
    if console is not None:
        console.install(app, settings)
        app.streamed_uploads = console.streamed_uploads(settings)  # the CSV import's upload
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    _error_handlers(app)
    relative_slash_redirects(app.router)  # not Starlette's: it trusts the Host header
    return app


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TokenError)
    async def token_error(request: Request, exc: TokenError) -> Response:
        # One answer for a tampered, unknown, erased or wrong-purpose token: nothing to learn.
        if _is_api(request):
            return JSONResponse({"detail": "this link is not valid"}, status_code=404)
        expired = "expired" in str(exc)
        return get_state(request).render(request, "invalid_link.html", {"expired": expired}, status=404)

    @app.exception_handler(BodyRefused)
    async def body_refused(request: Request, exc: BodyRefused) -> Response:
        # A deferred body (body_guard.py) refused when the route first read it.
        return refusal(exc.status, exc.detail, request.url.path)

    @app.exception_handler(BodyTimeout)
    async def body_timeout(request: Request, exc: BodyTimeout) -> Response:
        # A streamed upload too slow (the route deleted what it had written): 408, RFC 9110 §15.5.9.
        return refusal(408, SLOW_BODY, request.url.path)

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> Response:
        headers = {"Retry-After": str(exc.retry_after)}
        if _is_api(request):
            return JSONResponse({"detail": str(exc)}, status_code=429, headers=headers)
        response = get_state(request).render(request, "too_many.html", {"retry_after": exc.retry_after}, status=429)
        response.headers.update(headers)
        return response

    @app.exception_handler(CsrfError)
    async def csrf_error(request: Request, exc: CsrfError) -> Response:
        log.info("CSRF check failed for %s: %s", redact_path(request.url.path), exc)
        return get_state(request).render(request, "form_expired.html", status=403)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> Response:
        if _is_api(request):
            detail = [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]
            return JSONResponse({"detail": detail}, status_code=422)
        return get_state(request).render(request, "bad_request.html", {"message": str(exc)}, status=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_api(request) or exc.status_code != 404:
            return await http_exception_handler(request, exc)
        return get_state(request).render(request, "not_found.html", status=404)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if _is_api(request):
            # Never FastAPI's default reply: it repeats the input (a 10 MB body came back as a
            # 40 MB 422, issue 10). Field and problem only.
            return JSONResponse({"detail": safe_validation_errors(exc.errors())}, status_code=422)
        # Only path parameters can fail validation on the pages (/c/abc/...): a broken link.
        return get_state(request).render(request, "not_found.html", status=404)
