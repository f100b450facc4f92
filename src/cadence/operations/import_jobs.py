"""CSV imports started from the staff console (issue 14): queue one, run it with its progress in
the database, read its error report back made safe for a spreadsheet.

The import itself is the CLI's (:func:`cadence.operations.subscriber_import.import_csv`: streamed in chunks
of 1,000 rows, COPY on PostgreSQL, all or nothing or the valid rows with an error report), so a
1,000,000-row file takes the same bounded memory here as from ``cadence subscribers import``.
What this adds is the job row (db/import_jobs.py): the console's door stores the upload and calls
:func:`queue_import`; a Celery task (tasks.py) or, with the single-machine brokers, a thread of
``cadence web`` calls :func:`run_import_job`, which writes the counts as it goes so the job page
can show them live.

Files live in ``<data dir>/imports/`` named by job id only (``17.csv``, ``17.errors.csv``): the
name the browser gave the upload is shown to people, never used as a path. The upload is deleted
once its job has finished; the error report stays for the job page's download. A worker on another
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
from cadence.operations.subscriber_export import csv_cell
from cadence.operations.subscriber_import import ImportRejected, ImportReport, import_csv

__all__ = [
    "FINISHED",
    "MODES",
    "ImportJob",
    "error_report_download",
    "error_report_rows",
    "job_file",
    "queue_import",
    "report_file",
    "run_import_job",
]

log = logging.getLogger(__name__)

MODES = {"all": "all or nothing", "valid": "load the valid rows, report the bad ones"}
SHOWN_ON_PAGE = 20  # problems kept on the job row; the error report has every one
PROGRESS_EVERY = 0.5  # seconds between progress writes: ~2 small UPDATEs a second


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
) -> int:
    """Check the choices and the file's header, record a queued job (audit-logged as `actor`)
    and move `upload` to the job's file; the job id. InputError names the field at fault; the
    upload is then left where it was, for the caller to delete."""
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
    except InputError as exc:
        raise InputError(f"file: {display_name(file_name)}: {exc}") from None
    job_id = sql.insert_job(
        session,
        mode=mode,
        file_name=display_name(file_name),
        size_bytes=size,
        topics=topics,
        tags=tag_list,
        actor=actor,
        now=now,
    )
    detail = {
        "job": job_id,
        "file": display_name(file_name),
        "bytes": size,
        "mode": mode,
        "topics": list(topics),
        "tags": list(tag_list),
        **({"consent": f"confirmed by {actor} at upload"} if topics else {}),
    }
    record_audit(session, actor=actor, action="subscribers.import.queued", target="subscribers", detail=detail, now=now)
    imports_dir.mkdir(parents=True, exist_ok=True)
    os.replace(upload, job_file(imports_dir, job_id))
    return job_id


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
    log.info("import job %s: %s (%s rows)", job_id, state, f"{last.rows_read:,}")
    return state


def get_job(session: Session, job_id: int) -> ImportJob | None:
    return sql.get_job(session, job_id)


def recent_jobs(session: Session) -> list[ImportJob]:
    return sql.recent_jobs(session)


def error_report_download(
    session: Session, imports_dir: Path, job_id: int, *, actor: str, now: datetime
) -> tuple[Path, str] | None:
    """The error report of job `job_id` and its delimiter, or None if it has none; the download
    is audit-logged as `actor` (it holds people's rows, like an export)."""
    job = sql.get_job(session, job_id)
    path = report_file(imports_dir, job_id)
    if job is None or not job.has_report or not path.is_file():
        return None
    record_audit(
        session, actor=actor, action="subscribers.import.report", target="subscribers", detail={"job": job_id}, now=now
    )
    return path, job.delimiter


def error_report_rows(path: Path, delimiter: str) -> Iterator[bytes]:
    """The stored error report, streamed, every cell made inert for a spreadsheet (the
    subscriber export's rule, OWASP "CSV Injection"): a name like ``=HYPERLINK(...)`` in a bad
    row must not become a formula in the marketer's Excel. UTF-8 with a BOM, the file's delimiter."""
    yield codecs.BOM_UTF8
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    with path.open(encoding="utf-8-sig", newline="") as source:
        for record in csv.reader(source, delimiter=delimiter):
            writer.writerow([csv_cell(cell) for cell in record])
            if out.tell() > 64 * 1024:
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()
    yield out.getvalue().encode()
