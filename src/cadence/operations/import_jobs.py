"""CSV imports started from the staff console (issue 14): queue one, run it with its progress in
the database, read its error report back made safe for a spreadsheet.

The import itself is the CLI's (:func:`cadence.operations.subscriber_import.import_csv`: streamed in chunks
of 1,000 rows, COPY on PostgreSQL, all or nothing or the valid rows with an error report), so a
1,000,000-row file takes the same bounded memory here as from ``cadence subscribers import``.
What this adds is the job row (db/import_jobs.py): the console's door stores the upload and calls
:func:`queue_import`, which checks the file as the import would (its first CHECK_ROWS rows, nothing
written) and keeps what the campaigns' segment rules make of its columns and values (the CLI's
warnings, operations/import_findings.py) on a *pending* job; the editor reads them and confirms
(:func:`confirm_import`) or cancels (:func:`cancel_import`). Then a Celery task (tasks.py) or,
with the single-machine brokers, a thread of ``cadence web`` calls :func:`run_import_job`, which
writes the counts as it goes so the job page can show them live.

Files live in ``<data dir>/imports/`` named by job id only (``17.csv``, ``17.errors.csv``): the
name the browser gave the upload is shown to people, never used as a path. The upload is deleted
once its job has finished (or was cancelled, or left unconfirmed for PENDING_KEPT); the error report
stays for the job page's download for CADENCE_IMPORT_REPORT_DAYS (:func:`expire_files`). A worker on another
machine needs that folder shared with ``cadence web`` (the job fails saying so otherwise).
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.orm import Session

from cadence.clock import Clock
from cadence.config import Settings
from cadence.core.subscriber_csv import parse_tags, read_rows
from cadence.core.suppression_keys import SuppressionKeys
from cadence.db import import_jobs as sql
from cadence.db.audit import record_audit
from cadence.db.import_jobs import FINISHED, ImportJob, Progress
from cadence.db.session import engine_for, transaction
from cadence.errors import InputError
from cadence.files.catalog import CampaignCatalog
from cadence.operations.exit_goals import goal_campaigns
from cadence.operations.import_findings import import_findings
from cadence.operations.subscriber_export import csv_cell
from cadence.operations.subscriber_import import ImportRejected, ImportReport, import_csv, scan_csv

__all__ = [
    "FINISHED",
    "MODES",
    "ImportJob",
    "cancel_import",
    "confirm_import",
    "error_report_download",
    "error_report_rows",
    "expire_files",
    "is_stale",
    "job_file",
    "queue_import",
    "report_file",
    "resume_import",
    "run_import_job",
]

log = logging.getLogger(__name__)

MODES = {"all": "all or nothing", "valid": "load the valid rows, report the bad ones"}
SHOWN_ON_PAGE = 20  # problems kept on the job row; the error report has every one
PROGRESS_EVERY = 0.5  # seconds between progress writes: ~2 small UPDATEs a second
CHECK_ROWS = 5_000  # read in the upload request: 0.2-0.5 s on a loaded 2-core box (20,000: 1-2 s)
PENDING_KEPT = timedelta(hours=24)  # an upload nobody confirmed is deleted after this


def job_file(imports_dir: Path, job_id: int) -> Path:
    return imports_dir / f"{job_id}.csv"


def report_file(imports_dir: Path, job_id: int) -> Path:
    return imports_dir / f"{job_id}.errors.csv"


def display_name(raw: str) -> str:
    """The upload's name as people should read it: the last part of whatever path a browser sent
    (old browsers sent ``C:\\Users\\...``), no control characters, at most 200 characters."""
    name = re.split(r"[/\\]", raw)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:200] or "upload.csv"


def check_header(path: Path) -> None:
    """Read the header and the first record only: an upload that is no subscriber CSV at all
    (another kind of file, UTF-16, no email column) is refused at once, with the line and
    column, instead of becoming a failed job. Bad bytes in later rows are the job's to report."""
    with path.open("rb") as source:
        try:
            for _ in islice(read_rows(source), 1):
                pass
        except InputError as exc:
            if _looks_binary(path):
                raise InputError(f"this is not a CSV file (it holds binary data): {exc}") from None
            raise


def _looks_binary(path: Path) -> bool:
    with path.open("rb") as source:
        return b"\x00" in source.read(4096)


def queue_import(
    session: Session,
    *,
    upload: Path,
    imports_dir: Path,
    file_name: str,
    mode: str,
    topics: Sequence[str],
    known_topics: Mapping[str, str],
    tags: str,
    consent: bool,
    actor: str,
    now: datetime,
    campaigns_dir: Path,
    templates_dir: Path,
) -> int:
    """Check the choices and the file (its header, then its first CHECK_ROWS rows against the
    campaigns' segment rules: :func:`check_findings`), record a pending job holding the findings
    (audit-logged as `actor`) and move `upload` to the job's file; the job id. Nothing is
    imported until :func:`confirm_import`. InputError names the field at fault; the upload is
    then left where it was, for the caller to delete."""
    if mode not in MODES:
        raise InputError(f"mode: choose one of {', '.join(MODES)}")
    for topic in topics:
        if topic not in known_topics:
            raise InputError(f"topics: no newsletter topic {topic!r} (topics: {', '.join(known_topics) or 'none'})")
    if topics and not consent:
        named = ", ".join(known_topics[t] for t in topics)
        raise InputError(
            f"consent: confirm that everyone in the file agreed to receive {named}: joining a topic records their "
            "consent as given at import"
        )
    try:
        tag_list = parse_tags(tags)
    except InputError as exc:
        raise InputError(f"tags: {exc}") from None
    size = upload.stat().st_size
    if size == 0:
        raise InputError("file: the file is empty (it needs a header with an 'email' column)")
    try:
        check_header(upload)
        scanned, complete = scan_csv(upload, limit=CHECK_ROWS)
    except InputError as exc:
        raise InputError(f"file: {display_name(file_name)}: {exc}") from None
    findings = check_findings(scanned, campaigns_dir, templates_dir, stage="check", complete=complete)
    job_id = sql.insert_job(
        session,
        mode=mode,
        file_name=display_name(file_name),
        size_bytes=size,
        topics=topics,
        tags=tag_list,
        actor=actor,
        now=now,
        state="pending",
        findings=findings,
    )
    detail = {
        "job": job_id,
        "file": display_name(file_name),
        "bytes": size,
        "mode": mode,
        "topics": list(topics),
        "tags": list(tag_list),
        **({"consent": f"confirmed by {actor} at upload"} if topics else {}),
        "warnings": len(findings["warnings"]),
    }
    record_audit(
        session, actor=actor, action="subscribers.import.checked", target="subscribers", detail=detail, now=now
    )
    imports_dir.mkdir(parents=True, exist_ok=True)
    os.replace(upload, job_file(imports_dir, job_id))
    return job_id


def check_findings(
    report: ImportReport, campaigns_dir: Path, templates_dir: Path, *, stage: str, complete: bool = True
) -> dict[str, Any]:
    """What the job row keeps of a check (`stage` "check": the first rows) or of the import
    ("import": the whole file): the shared findings (columns, values, sentences), the columns as
    the importer maps them, and the rows read."""
    found = import_findings(report.header, report.values, campaigns_dir=campaigns_dir, templates_dir=templates_dir)
    header = report.header
    return {
        "stage": stage,
        "complete": complete,
        "rows": report.rows,
        "rejected": report.rejected,
        "problem_count": report.problem_count,
        "problems": [str(p) for p in report.problems[:SHOWN_ON_PAGE]],
        "mapping": [[n, f] for n, f in zip(header.names, header.fields, strict=True)] if header else [],
        "warnings": [m.text for m in found.warnings],
        **found.document(),
    }


def confirm_import(session: Session, job_id: int, *, actor: str, now: datetime) -> bool:
    """The editor read the check and wants the import: pending → queued (audit-logged). False
    when it was not pending (confirmed twice, cancelled, expired) or its file has no rows (the
    check page offers no button then): the caller starts nothing."""
    job = sql.get_job(session, job_id)
    if job is None or (job.findings or {}).get("rows") == 0 or not sql.confirm_job(session, job_id, now=now):
        return False
    record_audit(
        session, actor=actor, action="subscribers.import.queued", target="subscribers", detail={"job": job_id}, now=now
    )
    return True


def cancel_import(session: Session, imports_dir: Path, job_id: int, *, actor: str, now: datetime) -> bool:
    """The editor read the check and does not want the import: the job ends "cancelled" and the
    upload (everyone's data) is deleted. False when it was not pending."""
    if not sql.cancel_job(session, job_id, now=now, message=f"cancelled by {actor} after the check"):
        return False
    record_audit(
        session,
        actor=actor,
        action="subscribers.import.cancelled",
        target="subscribers",
        detail={"job": job_id},
        now=now,
    )
    job_file(imports_dir, job_id).unlink(missing_ok=True)
    return True


def is_stale(job: ImportJob, now: datetime, *, lease_seconds: float, runs_here: bool) -> bool:
    """A job that says "running" (or "queued" after its confirmation) but whose runner has not
    written for longer than the lease: the thread of ``cadence web`` died with its process, or
    the worker was killed. `runs_here`: this process runs it now (an all-or-nothing import on
    SQLite writes no heartbeat until its end: see run_import_job). Pure."""
    if runs_here or job.state not in ("running", "queued") or job.heartbeat_at is None:
        return False
    return job.heartbeat_at < now - timedelta(seconds=lease_seconds)


def resume_import(session: Session, job_id: int, *, actor: str, now: datetime, lease_seconds: float) -> bool:
    """Put a stale job back in the queue for `actor` (audit-logged); False if it is not stale.
    The caller hands it to a runner, which imports the whole file again: rows already stored
    by the dead run are counted unchanged, never duplicated (the import is an upsert)."""
    if not sql.requeue_stale(session, job_id, now=now, stale_before=now - timedelta(seconds=lease_seconds)):
        return False
    record_audit(
        session, actor=actor, action="subscribers.import.resumed", target="subscribers", detail={"job": job_id}, now=now
    )
    return True


def expire_files(session: Session, imports_dir: Path, *, now: datetime, report_days: int) -> tuple[int, int]:
    """Delete the error reports of imports that ended more than `report_days` ago (they hold
    people's rows; GDPR Art. 5(1)(e) storage limitation), the uploads nobody confirmed within
    PENDING_KEPT (their jobs end "cancelled") and those of jobs nothing was heard from for
    `report_days` (interrupted and never run again, or never taken by a worker: they end
    "failed"). The job rows stay, saying when their report went. (error reports deleted,
    uploads deleted)."""
    old_reports = sql.reports_before(session, now - timedelta(days=report_days))
    for job_id in old_reports:
        report_file(imports_dir, job_id).unlink(missing_ok=True)
    sql.report_deleted(session, old_reports, now=now)
    unconfirmed = sql.pending_before(session, now - PENDING_KEPT)
    for job_id in unconfirmed:
        message = "not confirmed within 24 hours: the upload was deleted; upload the file again to import it"
        if sql.cancel_job(session, job_id, now=now, message=message):
            job_file(imports_dir, job_id).unlink(missing_ok=True)
    silent = now - timedelta(days=report_days)
    abandoned = sql.silent_before(session, silent)
    for job_id in abandoned:
        message = (
            f"interrupted and not run again within {report_days} days: the upload was deleted; "
            "upload the file again to import it"
        )
        if sql.abandon_job(session, job_id, now=now, silent_before=silent, message=message):
            job_file(imports_dir, job_id).unlink(missing_ok=True)
    return len(old_reports), len(unconfirmed) + len(abandoned)


def run_import_job(settings: Settings, clock: Clock, job_id: int, *, runner: str) -> str:
    """Run job `job_id` if nobody else is (a task delivered twice does the work once); its final
    state, or "" when it was not ours to run. Progress is written every PROGRESS_EVERY seconds
    in transactions of its own; the end (done, rejected, failed) and the audit entry in one."""
    url = settings.database_url
    now = clock.now()
    stale = now - timedelta(seconds=settings.lease_seconds)
    with transaction(url) as session:
        if not sql.claim_job(session, job_id, runner=runner, now=now, stale_before=stale):
            log.info("import job %s: already taken or finished, nothing to do", job_id)
            return ""
        job = sql.get_job(session, job_id)
        assert job is not None
        options = (job.mode, tuple(job.topics), tuple(job.tags), job.actor, job.file_name)
    mode, topics, tags, actor, file_name = options
    source = job_file(settings.imports_dir, job_id)
    report_path = report_file(settings.imports_dir, job_id)
    started = time.monotonic()  # for rows/s only: a duration, not a business time (clock.py)
    last_write = 0.0
    # SQLite has one writer: an all-or-nothing import holds it until its end, and a progress
    # write would wait for it (session.py's BEGIN IMMEDIATE). There the counts show at the end.
    live = mode == "valid" or engine_for(url).dialect.name != "sqlite"

    def progress_of(report: ImportReport, bytes_read: int) -> Progress:
        seconds = time.monotonic() - started
        return Progress(
            rows_read=report.rows,
            bytes_read=bytes_read,
            created=report.created,
            updated=report.updated,
            unchanged=report.unchanged,
            rejected=report.rejected,
            suppressed=report.suppressed,
            problem_count=report.problem_count,
            tags_added=report.tags_added,
            topics_joined=report.topics_joined,
            rows_per_second=report.rows / seconds if seconds > 0 else 0.0,
        )

    last = Progress()

    def on_report(report: ImportReport, bytes_read: int) -> None:
        nonlocal last_write, last
        last = progress_of(report, bytes_read)
        if live and time.monotonic() - last_write >= PROGRESS_EVERY:
            last_write = time.monotonic()
            with transaction(url) as progress_session:
                sql.save_progress(progress_session, job_id, last, now=clock.now())

    state, message, problems, delimiter = "failed", "", [], ","
    report: ImportReport | None = None
    try:
        if not source.is_file():
            raise InputError(
                f"the uploaded file is not on this machine ({runner}): the workers need the data dir's imports "
                "folder shared with cadence web, or CADENCE_IMPORT_RUN=web"
            )
        report = import_csv(
            url,
            source,
            clock.now(),
            keys=SuppressionKeys.from_settings(settings),
            skip_invalid=mode == "valid",
            error_report=report_path,
            topics=topics,
            tags=tags,
            on_report=on_report,
            goals=goal_campaigns(CampaignCatalog(settings.campaigns_dir, settings.templates_dir)),
        )
        state = "done"
    except ImportRejected as rejected:
        report, state = rejected.report, "rejected"
        message = f"{report.rejected:,} of {report.rows:,} rows have problems: nothing was imported"
    except InputError as exc:
        message = str(exc).replace(str(source), file_name)  # the job's file name, not our path
    except Exception as exc:  # the job must not stay "running" forever; say what broke
        log.exception("import job %s failed", job_id)
        message = f"the import stopped: {type(exc).__name__}: {exc}"[:1000]
    if report is not None:
        last = progress_of(report, source.stat().st_size if source.is_file() else 0)
        problems = [str(p) for p in report.problems[:SHOWN_ON_PAGE]]
        delimiter = report.header.delimiter if report.header else ","
        if state == "rejected":  # rolled back: nothing was created, updated or tagged
            last = Progress(
                rows_read=last.rows_read,
                bytes_read=last.bytes_read,
                rejected=last.rejected,
                problem_count=last.problem_count,
                rows_per_second=last.rows_per_second,
            )
    has_report = report is not None and (report.rejected + report.suppressed) > 0 and report_path.is_file()
    # The whole file's findings replace the check's (which saw its first CHECK_ROWS rows).
    findings = None
    if report is not None and report.header is not None:
        findings = check_findings(report, settings.campaigns_dir, settings.templates_dir, stage="import")
    with transaction(url) as session:
        sql.finish_job(
            session,
            job_id,
            state=state,
            progress=last,
            now=clock.now(),
            message=message,
            problems=problems,
            delimiter=delimiter,
            has_report=has_report,
            findings=findings,
        )
        detail = {"job": job_id, "file": file_name, "mode": mode, "state": state, **last.values()}
        detail.pop("rows_per_second")
        if message:
            detail["message"] = message[:300]
        # The staff user who uploaded it, like the CLI's "subscribers.import" (issue 13 item 8).
        record_audit(
            session, actor=actor, action="subscribers.import", target="subscribers", detail=detail, now=clock.now()
        )
    # The upload holds everyone's data and is of no more use: the error report keeps the rows
    # that need fixing. (Storage limitation, GDPR Art. 5(1)(e).)
    source.unlink(missing_ok=True)
    # Older reports go too, here as well as when the pages are read: an instance whose staff
    # never open the imports list still deletes them at its next import.
    try:
        with transaction(url) as session:
            expire_files(session, settings.imports_dir, now=clock.now(), report_days=settings.import_report_days)
    except Exception:  # this job is done whatever happens here; the pages try again
        log.exception("import job %s: could not delete old error reports", job_id)
    log.info("import job %s: %s (%s rows)", job_id, state, f"{last.rows_read:,}")
    return state


def get_job(session: Session, job_id: int) -> ImportJob | None:
    return sql.get_job(session, job_id)


def recent_jobs(session: Session) -> list[ImportJob]:
    return sql.recent_jobs(session)


def error_report_download(
    session: Session, imports_dir: Path, job_id: int, *, actor: str, now: datetime
) -> tuple[TextIO, str] | None:
    """The error report of job `job_id`, opened, and its delimiter, or None if it has none; the
    download is audit-logged as `actor` (it holds people's rows, like an export). Opened here,
    not when the response starts streaming: the retention (:func:`expire_files`) may delete the
    file in between, and an open file stays readable to the end once its name is gone."""
    job = sql.get_job(session, job_id)
    if job is None or not job.has_report:
        return None
    try:
        source = report_file(imports_dir, job_id).open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        return None
    record_audit(
        session, actor=actor, action="subscribers.import.report", target="subscribers", detail={"job": job_id}, now=now
    )
    return source, job.delimiter


def error_report_rows(source: TextIO, delimiter: str) -> Iterator[bytes]:
    """The stored error report (`source`, from :func:`error_report_download`; closed at the
    end), streamed, every cell made inert for a spreadsheet (the
    subscriber export's rule, OWASP "CSV Injection"): a name like ``=HYPERLINK(...)`` in a bad
    row must not become a formula in the marketer's Excel. UTF-8 with a BOM, the file's delimiter."""
    with source:
        yield codecs.BOM_UTF8
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter)
        for record in csv.reader(source, delimiter=delimiter):
            writer.writerow([csv_cell(cell) for cell in record])
            if out.tell() > 64 * 1024:
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode()
