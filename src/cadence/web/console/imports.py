"""/admin/imports: upload a CSV of subscribers, check it, watch its import, download its error report.

The upload streams to the data dir (uploads.py) and becomes a pending job
(operations/import_jobs.queue_import, audit-logged as the editor) holding the check: the rows
read, how each column is stored, and the warnings ``cadence subscribers import`` prints (a column
no segment reads, an attribute the segments read that no column gives, values no rule accepts).
The job page shows them with two buttons, plain forms (no JavaScript needed): import or cancel.
Confirmed, it is queued; then either a Celery task runs it, or, with the single-machine brokers,
a thread of this process does (``Settings.run_imports_in_web``: with only ``cadence web``
running nobody reads the filesystem queue). Never inside the request: a 1,000,000-row file takes a minute or more.

The job page shows the counts stored in the job row; while it runs a small static script
(static/console-import.js, allowed by the CSP's ``script-src 'self'``) polls
``progress.json`` and updates them in place, in a polite live region, and without JavaScript a
``<noscript>`` refresh reloads the page every few seconds. A job whose runner died (the web
process restarted under its thread, a worker killed) shows as "interrupted" once its heartbeat is
older than CADENCE_LEASE_SECONDS, with a button that starts it again (operations/import_jobs.
resume_import). Old error reports are deleted when these pages are read (expire_files).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
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

# The jobs a thread of this process runs now: an all-or-nothing import on SQLite writes no
# heartbeat until its end, and must not look interrupted to the process that runs it.
_running: set[int] = set()
_running_lock = threading.Lock()


def _expire(state: WebState) -> None:
    """CADENCE_IMPORT_REPORT_DAYS, applied whenever someone reads the imports (a few cheap
    indexed SELECTs): no timer of its own to run or forget."""
    with state.session() as session:
        import_jobs.expire_files(
            session, state.settings.imports_dir, now=state.now(), report_days=state.settings.import_report_days
        )


def _imports_page(
    request: Request, state: WebState, me: StaffIdentity, *, error: str = "", status: int = 200, chosen: Any = None
) -> Response:
    _expire(state)
    with state.session() as session:
        jobs = import_jobs.recent_jobs(session)
    context = {
        "jobs": jobs,
        "shown": {job.id: _shown_state(state, job) for job in jobs},
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
                campaigns_dir=state.settings.campaigns_dir,
                templates_dir=state.settings.templates_dir,
            )
    except InputError as exc:
        received.discard()
        return _imports_page(request, state, me, error=_sentence(exc), status=400, chosen=chosen)
    except BaseException:
        received.discard()  # the job was not queued (a database error, say): nothing keeps the file
        raise
    return redirect(f"/admin/imports/{job_id}")  # the check: nothing is imported before the editor confirms


@router.post("/imports/{job_id}/start")
def start(request: Request, state: State, me: Editor, job_id: JobId) -> Response:
    """The check's "Import" button: pending → queued, handed to the runner. A second click (or a
    cancelled job) changes nothing and shows the job as it is."""
    with state.session() as session:
        confirmed = import_jobs.confirm_import(session, job_id, actor=me.actor, now=state.now())
    if confirmed:
        _start(request, state, job_id)
    return redirect(f"/admin/imports/{job_id}")


@router.post("/imports/{job_id}/cancel")
def cancel(state: State, me: Editor, job_id: JobId) -> Response:
    with state.session() as session:
        import_jobs.cancel_import(session, state.settings.imports_dir, job_id, actor=me.actor, now=state.now())
    return redirect(f"/admin/imports/{job_id}")


@router.post("/imports/{job_id}/resume")
def resume(request: Request, state: State, me: Editor, job_id: JobId) -> Response:
    """The interrupted job's button: run it again from the start of its file (the dead run's
    rows are upserted again, counted unchanged). Only a job that is interrupted here."""
    with _running_lock:
        here = job_id in _running
    if not here:
        with state.session() as session:
            resumed = import_jobs.resume_import(
                session, job_id, actor=me.actor, now=state.now(), lease_seconds=state.settings.lease_seconds
            )
        if resumed:
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
            with _running_lock:
                _running.add(job_id)
            try:
                import_jobs.run_import_job(settings, runtime.clock, job_id, runner="web")
            except Exception:  # the thread must not die silently; run_import_job marks the job
                log.exception("import job %s: could not be run", job_id)
            finally:
                with _running_lock:
                    _running.discard(job_id)

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
    _expire(state)
    job = _job_or_404(request, state, me, job_id)
    if isinstance(job, Response):
        return job
    context = {
        "job": job,
        "view": job_view(job, _shown_state(state, job)),
        "modes": import_jobs.MODES,
        "report_days": state.settings.import_report_days,
        "run_in_web": state.settings.run_imports_in_web,
    }
    return page(request, "import_job.html", context, me=me)


@router.get("/imports/{job_id}/progress.json")
def job_progress(request: Request, state: State, me: Viewer, job_id: JobId) -> Response:
    job = _job_or_404(request, state, me, job_id)
    if isinstance(job, Response):
        return JSONResponse({"detail": "no such import"}, status_code=404)
    return JSONResponse(job_view(job, _shown_state(state, job)), headers={"Cache-Control": "no-store"})


def _shown_state(state: WebState, job: ImportJob) -> str:
    """The job's state, or "interrupted" when its runner went silent (operations.import_jobs.is_stale).
    A queued job waits for a worker as long as it takes, unless this process was to run it."""
    with _running_lock:
        here = job.id in _running
    if job.state == "queued" and not state.settings.run_imports_in_web:
        return job.state
    stale = import_jobs.is_stale(job, state.now(), lease_seconds=state.settings.lease_seconds, runs_here=here)
    return "interrupted" if stale else job.state


def _when(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else None


def job_view(job: ImportJob, shown: str) -> dict[str, Any]:
    """What the job page and its JSON show: numbers formatted as on the page, the state as shown
    (`shown`: "interrupted" for a dead runner's job), and the findings of the check or the import."""
    percent = min(100, int(job.bytes_read * 100 / job.size_bytes)) if job.size_bytes else 0
    if job.state == "done":
        percent = 100
    return {
        "state": shown,
        # The page stops polling on these: a pending job waits for a click, an interrupted one too.
        "finished": job.state in FINISHED or shown in ("pending", "interrupted"),
        "heartbeat_at": _when(job.heartbeat_at),
        "report_deleted_at": _when(job.report_deleted_at),
        "findings": job.findings,
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
    source, delimiter = found
    headers = {"Content-Disposition": f'attachment; filename="import-{job_id}-errors.csv"', "Cache-Control": "no-store"}
    return StreamingResponse(
        import_jobs.error_report_rows(source, delimiter), media_type="text/csv; charset=utf-8", headers=headers
    )
