"""/admin/imports: upload a CSV of subscribers, watch its import, download its error report.

The upload streams to the data dir (uploads.py) and becomes a queued job
(operations/import_jobs.queue_import, audit-logged as the editor); then either a Celery task
runs it, or, with the single-machine brokers, a thread of this process does
(``Settings.run_imports_in_web``: with only ``cadence web`` running nobody reads the filesystem
queue). Never inside the request: a 1,000,000-row file takes a minute or more.

The job page shows the counts stored in the job row; while it runs a small static script
(static/console-import.js, allowed by the CSP's ``script-src 'self'``) polls
``progress.json`` and updates them in place, in a polite live region, and without JavaScript a
``<noscript>`` refresh reloads the page every few seconds.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.routing import APIRouter
from starlette.responses import JSONResponse, Response, StreamingResponse

from cadence.errors import InputError
from cadence.operations import import_jobs
from cadence.operations.import_jobs import FINISHED, ImportJob
from cadence.operations.staff_accounts import StaffIdentity
from cadence.web.console.auth import Access, Editor, Viewer
from cadence.web.console.render import page, redirect
from cadence.web.console.uploads import Upload
from cadence.web.state import State, WebState

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", include_in_schema=False)

UPLOAD_PATH = "/admin/imports"
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]
EditorUpload = Annotated[StaffIdentity, Depends(Access("editor", upload=True))]


def _imports_page(
    request: Request, state: WebState, me: StaffIdentity, *, error: str = "", status: int = 200, chosen: Any = None
) -> Response:
    with state.session() as session:
        jobs = import_jobs.recent_jobs(session)
    context = {
        "jobs": jobs,
        "error": error,
        "modes": import_jobs.MODES,
        "topics": state.sender.topics,
        "max_mb": state.settings.import_max_bytes // (1024 * 1024),
        "chosen": chosen or {"mode": "valid", "topics": [], "tags": ""},
    }
    return page(request, "imports.html", context, me=me, status=status)


@router.get("/imports")
def imports(request: Request, state: State, me: Viewer) -> Response:
    return _imports_page(request, state, me)


@router.post("/imports")
def upload(request: Request, state: State, me: EditorUpload) -> Response:
    received: Upload = request.state.upload
    chosen = {"mode": received.value("mode"), "topics": received.values("topic"), "tags": received.value("tags")}
    if received.path is None or not received.file_name:
        # A file part with an empty name (what a browser sends when no file was chosen, and what
        # anyone can send with content) was still streamed to disk: delete it, or every such
        # POST leaves up to CADENCE_IMPORT_MAX_MB of people's data in imports/ for good.
        received.discard()
        return _imports_page(request, state, me, error="Choose a CSV file to import.", status=400, chosen=chosen)
    try:
        with state.session() as session:
            job_id = import_jobs.queue_import(
                session,
                upload=received.path,
                imports_dir=state.settings.imports_dir,
                file_name=received.file_name,
                mode=received.value("mode"),
                topics=received.values("topic"),
                known_topics={key: topic.name for key, topic in state.sender.topics.items()},
                tags=received.value("tags"),
                consent=received.value("consent") == "yes",
                actor=me.actor,
                now=state.now(),
            )
    except InputError as exc:
        received.discard()
        return _imports_page(request, state, me, error=_sentence(exc), status=400, chosen=chosen)
    except BaseException:
        received.discard()  # the job was not queued (a database error, say): nothing keeps the file
        raise
    _start(request, state, job_id)
    return redirect(f"/admin/imports/{job_id}")


def _sentence(exc: InputError) -> str:
    """ "file: people.csv: line 1: ..." → "The file people.csv: line 1: ..." for the page."""
    field, _, rest = str(exc).partition(": ")
    labels = {"file": "The file", "mode": "Mode", "topics": "Topics", "tags": "Tags", "consent": "Consent"}
    return f"{labels[field]}: {rest}" if field in labels and rest else str(exc)


def _start(request: Request, state: WebState, job_id: int) -> None:
    """Hand the committed job to whoever runs imports (see the module docstring)."""
    settings = state.settings
    if settings.run_imports_in_web:
        runtime = state.runtime

        def run() -> None:
            try:
                import_jobs.run_import_job(settings, runtime.clock, job_id, runner="web")
            except Exception:  # the thread must not die silently; run_import_job marks the job
                log.exception("import job %s: could not be run", job_id)

        threading.Thread(target=run, name=f"cadence-import-{job_id}", daemon=True).start()
        return
    from cadence.tasks import enqueue_import, make_celery

    app = getattr(request.app.state, "import_celery", None)
    if app is None:
        app = request.app.state.import_celery = make_celery(settings)
    enqueue_import(app, job_id)


def _job_or_404(request: Request, state: WebState, me: StaffIdentity, job_id: int) -> ImportJob | Response:
    with state.session() as session:
        job = import_jobs.get_job(session, job_id)
    if job is None:
        return page(
            request,
            "message.html",
            {"title": "No such import", "message": "Check the list of imports."},
            me=me,
            status=404,
        )
    return job


@router.get("/imports/{job_id}")
def job_page(request: Request, state: State, me: Viewer, job_id: JobId) -> Response:
    job = _job_or_404(request, state, me, job_id)
    if isinstance(job, Response):
        return job
    return page(request, "import_job.html", {"job": job, "view": job_view(job), "modes": import_jobs.MODES}, me=me)


@router.get("/imports/{job_id}/progress.json")
def job_progress(request: Request, state: State, me: Viewer, job_id: JobId) -> Response:
    job = _job_or_404(request, state, me, job_id)
    if isinstance(job, Response):
        return JSONResponse({"detail": "no such import"}, status_code=404)
    return JSONResponse(job_view(job), headers={"Cache-Control": "no-store"})


def job_view(job: ImportJob) -> dict[str, Any]:
    """What the job page and its JSON show: numbers formatted as on the page."""
    percent = min(100, int(job.bytes_read * 100 / job.size_bytes)) if job.size_bytes else 0
    if job.state == "done":
        percent = 100
    return {
        "state": job.state,
        "finished": job.state in FINISHED,
        "percent": percent,
        "rows_read": f"{job.rows_read:,}",
        "loaded": f"{job.created + job.updated:,}",
        "created": f"{job.created:,}",
        "updated": f"{job.updated:,}",
        "unchanged": f"{job.unchanged:,}",
        "rejected": f"{job.rejected:,}",
        "suppressed": f"{job.suppressed:,}",
        "rate": f"{job.rows_per_second:,.0f}",
    }


@router.get("/imports/{job_id}/errors.csv")
def error_report(request: Request, state: State, me: Editor, job_id: JobId) -> Response:
    """Every bad or suppressed row with its reason (line, field), cells made inert for a
    spreadsheet; the download is audit-logged (it holds people's data, like an export).

    A GET that writes (the audit row), so another site must not be able to make an editor's
    browser fetch it (the session cookie is SameSite=Lax: sent on a cross-site link or
    redirect): the browser's own word, ``Sec-Fetch-Site`` (W3C Fetch Metadata), refuses a
    cross-site or sibling-site request; our page's link is same-origin, a typed URL "none"."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        message = {"title": "Not allowed", "message": "Download the error report from its import's page."}
        return page(request, "message.html", message, me=me, status=403)
    with state.session() as session:
        found = import_jobs.error_report_download(
            session, state.settings.imports_dir, job_id, actor=me.actor, now=state.now()
        )
    if found is None:
        message = {"title": "No error report", "message": "This import has no rows to report."}
        return page(request, "message.html", message, me=me, status=404)
    path, delimiter = found
    headers = {"Content-Disposition": f'attachment; filename="import-{job_id}-errors.csv"', "Cache-Control": "no-store"}
    return StreamingResponse(
        import_jobs.error_report_rows(path, delimiter), media_type="text/csv; charset=utf-8", headers=headers
    )
