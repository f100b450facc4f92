"""The staff console under ``/admin`` (issue 14): server-rendered pages over the operations.

Map::

    auth.py     Access: the role (and CSRF) check on every route; session cookies
    login.py    /admin/login (+ /login/code for TOTP), /admin/logout, /admin/setup/<token>
    pages.py    /admin (dashboard), /admin/subscribers[/<id>] and their actions, /admin/audit
    campaigns.py /admin/campaigns[/<id>]: state, pause, resume, cancel, send test, results
    composer.py /admin/newsletters[/<id>]: the newsletter composer (stored drafts, live preview,
                audience counts, send test, schedule); composer_form.py: its form <-> a draft
    admin.py    /admin/users (admin), /admin/account (password, second factor)
    imports.py  /admin/imports[/<id>]: upload a CSV, watch the import job, its error report
    uploads.py  the import's multipart body streamed to the data dir
    render.py   the console frame, CSRF tokens in forms, setup links kept out of access logs

``install(app, settings)`` adds it to the web app unless ``CADENCE_ADMIN_ENABLED=false``.
Pages use templates/console/ and static/console.css. The only scripts are static files
(static/composer.js for the composer, static/console-import.js for the import job page;
script-src 'self': no inline code, no eval), so the strict CSP of web/security.py applies
unchanged; every page works without them.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.responses import Response

from cadence.config import Settings
from cadence.web.console import admin, campaigns, composer, imports, login, pages
from cadence.web.console.auth import (
    ConsoleCsrf,
    ConsoleCsrfError,
    ConsoleOriginError,
    Forbidden,
    NotLoggedIn,
    identity_of,
)
from cadence.web.console.login import return_to
from cadence.web.console.render import page, redact_setup_links, redirect
from cadence.web.console.uploads import FORM_ROOM, UploadError
from cadence.web.security import redact_path
from cadence.web.state import get_state

log = logging.getLogger(__name__)


def install(app: FastAPI, settings: Settings) -> None:
    if not settings.admin_enabled:
        return
    app.state.console_csrf = ConsoleCsrf(settings.secret_key, settings.base_url)
    for router in (login.router, pages.router, campaigns.router, composer.router, imports.router, admin.router):
        app.include_router(router)
    redact_setup_links()

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        if request.method in ("GET", "HEAD"):
            back = return_to(request.url.path)  # a composer page: back there after logging in
            return redirect(f"/admin/login?next={quote(back, safe='/')}" if back else "/admin/login")
        if request.url.path.startswith("/admin/newsletters"):
            reason = "Your session ended before this could be saved, so nothing was saved."
            return await composer.expired_page(request, title="Please log in again", reason=reason)
        return page(
            request,
            "message.html",
            {"title": "Please log in again", "message": "Your session has ended. Log in and try again."},
            status=403,
        )

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        me = identity_of(request, get_state(request))
        log.info(
            "console: %s refused %s %s (%s)",
            me.actor if me else "?",
            request.method,
            redact_path(request.url.path),
            exc,
        )
        return page(
            request,
            "message.html",
            {"title": "Not allowed", "message": str(exc)[:1].upper() + str(exc)[1:] + "."},
            me=me,
            status=403,
        )

    @app.exception_handler(UploadError)
    async def upload_failed(request: Request, exc: UploadError) -> Response:
        me = identity_of(request, get_state(request))
        message = str(exc)[:1].upper() + str(exc)[1:] + ". Nothing was imported."
        return page(request, "message.html", {"title": "Upload refused", "message": message}, me=me, status=exc.status)

    @app.exception_handler(ConsoleCsrfError)
    async def csrf_failed(request: Request, exc: ConsoleCsrfError) -> Response:
        log.info("console: CSRF check failed for %s: %s", redact_path(request.url.path), exc)
        if request.method == "POST" and request.url.path.startswith("/admin/newsletters"):
            reason = "This form is from an earlier session (you logged in again since), so nothing was saved."
            return await composer.expired_page(request, title="Form expired", reason=reason)
        me = identity_of(request, get_state(request))
        if isinstance(exc, ConsoleOriginError):
            message = (
                f"This form was sent from a page at another address than the console's, {exc.expected} "
                "(CADENCE_BASE_URL), so nothing was changed. Open the console at "
                f"{exc.expected}/admin, or set CADENCE_BASE_URL to the address you use and restart cadence web."
            )
            return page(request, "message.html", {"title": "Wrong address", "message": message}, me=me, status=403)
        message = "This form has expired or did not come from this console. Go back, reload the page and try again."
        return page(request, "message.html", {"title": "Form expired", "message": message}, me=me, status=403)


def streamed_uploads(settings: Settings) -> dict[str, int]:
    """The console paths whose bodies the body guard must not buffer, with their limits."""
    if not settings.admin_enabled:
        return {}
    return {imports.UPLOAD_PATH: settings.import_max_bytes + FORM_ROOM}
