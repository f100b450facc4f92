"""The console's import jobs (issue 14): one row per CSV uploaded in the staff console, holding
what the job page shows while it runs and after.

The table is in this module with its SQL (as ``staff_models.py`` sits beside ``staff.py``): the
only writers are the upload and the editor's check (:func:`insert_job`, :func:`confirm_job`,
:func:`cancel_job`), the process running the import (:func:`claim_job`, :func:`save_progress`,
:func:`finish_job`), an editor re-running a job whose runner died (:func:`requeue_stale`) and the
retention (:func:`report_deleted`, :func:`cancel_job`, :func:`abandon_job`). Progress is written
in short transactions of its own, never in the import's: an all-or-nothing import holds one
transaction for the whole file, and the job page must see the counts move while it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ColumnElement, Float, String, Text, and_, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from cadence.db.models import Base, BigId, UTCDateTime

STATES = ("pending", "queued", "running", "done", "rejected", "failed", "cancelled")
FINISHED = ("done", "rejected", "failed", "cancelled")


class ImportJob(Base):
    """One console import. ``state``: pending (uploaded and checked, waiting for the editor to
    confirm it; or cancelled) → queued → running → done (the rows are in), rejected (an
    all-or-nothing import found bad rows: nothing written) or failed (the file as a whole could
    not be read, or the process broke). ``mode``: ``all`` (all or nothing) or ``valid`` (load the
    valid rows, report the rest). ``file_name`` is the upload's name as the browser sent it, for
    people to read: never a path (the file is ``imports/<id>.csv`` in the data dir)."""

    __tablename__ = "import_jobs"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    mode: Mapped[str] = mapped_column(String(20))
    file_name: Mapped[str] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    topics: Mapped[list[str]] = mapped_column(JSON)
    tags: Mapped[list[str]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the last progress write
    runner: Mapped[str] = mapped_column(String(200))  # "web" or the worker's host name
    rows_read: Mapped[int] = mapped_column(BigInteger)
    bytes_read: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[int] = mapped_column(BigInteger)
    updated: Mapped[int] = mapped_column(BigInteger)
    unchanged: Mapped[int] = mapped_column(BigInteger)
    rejected: Mapped[int] = mapped_column(BigInteger)
    suppressed: Mapped[int] = mapped_column(BigInteger)
    problem_count: Mapped[int] = mapped_column(BigInteger)
    tags_added: Mapped[int] = mapped_column(BigInteger)
    topics_joined: Mapped[int] = mapped_column(BigInteger)
    rows_per_second: Mapped[float] = mapped_column(Float)
    problems: Mapped[list[str]] = mapped_column(JSON)  # the first few, as "line N: field: reason"
    message: Mapped[str] = mapped_column(Text)  # why it failed or was rejected
    delimiter: Mapped[str] = mapped_column(String(4))  # the file's, for reading the error report
    has_report: Mapped[bool] = mapped_column(Boolean)
    # What the campaigns' segment rules make of the columns and values (ImportFindings.document()
    # and the rows checked): from the check before the import, then from the whole file.
    findings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    report_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # CADENCE_IMPORT_REPORT_DAYS


_COUNTERS = (
    "rows_read", "bytes_read", "created", "updated", "unchanged", "rejected", "suppressed",
    "problem_count", "tags_added", "topics_joined",
)  # fmt: skip


@dataclass(frozen=True)
class Progress:
    """The counters a running import reports (see ImportJob)."""

    rows_read: int = 0
    bytes_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    suppressed: int = 0
    problem_count: int = 0
    tags_added: int = 0
    topics_joined: int = 0
    rows_per_second: float = 0.0

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (*_COUNTERS, "rows_per_second")}


def insert_job(
    session: Session,
    *,
    mode: str,
    file_name: str,
    size_bytes: int,
    topics: Sequence[str],
    tags: Sequence[str],
    actor: str,
    now: datetime,
    state: str = "queued",
    findings: dict[str, Any] | None = None,
) -> int:
    """A queued (or `state`: pending) job; its id (the caller names the stored file after it)."""
    if state not in ("pending", "queued"):
        raise ValueError(f"not a starting state: {state!r}")
    job = ImportJob(
        state=state,
        findings=findings,
        mode=mode,
        file_name=file_name[:300],
        size_bytes=size_bytes,
        topics=list(topics),
        tags=list(tags),
        actor=actor[:200],
        created_at=now,
        runner="",
        problems=[],
        message="",
        delimiter=",",
        has_report=False,
        rows_per_second=0.0,
        **dict.fromkeys(_COUNTERS, 0),
    )
    session.add(job)
    session.flush()
    return job.id


def confirm_job(session: Session, job_id: int, *, now: datetime) -> bool:
    """pending → queued (the editor confirmed the check); False if it was not pending. The
    heartbeat starts here, so a queued job nobody takes can be told apart (see is_stale)."""
    confirmed = session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id, ImportJob.state == "pending")
        .values(state="queued", heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(confirmed.rowcount)  # type: ignore[attr-defined]


def cancel_job(session: Session, job_id: int, *, now: datetime, message: str) -> bool:
    """pending → cancelled; False if it was not pending (confirmed meanwhile, or gone)."""
    cancelled = session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id, ImportJob.state == "pending")
        .values(state="cancelled", finished_at=now, message=message)
        .execution_options(synchronize_session=False)
    )
    return bool(cancelled.rowcount)  # type: ignore[attr-defined]


def requeue_stale(session: Session, job_id: int, *, now: datetime, stale_before: datetime) -> bool:
    """A job whose runner went silent before `stale_before` back to queued, its heartbeat now (so
    it no longer looks interrupted while it waits for its new runner); False when it was not
    stale (finished meanwhile, or its runner wrote again). One UPDATE, the condition in its WHERE."""
    requeued = session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id, _silent_since(stale_before))
        .values(state="queued", heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(requeued.rowcount)  # type: ignore[attr-defined]


def _silent_since(before: datetime) -> ColumnElement[bool]:
    """Queued or running, and nothing heard from its runner since `before`."""
    return and_(ImportJob.state.in_(("running", "queued")), ImportJob.heartbeat_at < before)


def silent_before(session: Session, before: datetime) -> list[int]:
    """Jobs confirmed or started whose runner has not written since `before` (interrupted and
    not run again, or never taken by a worker)."""
    return list(session.scalars(select(ImportJob.id).where(_silent_since(before))))


def abandon_job(session: Session, job_id: int, *, now: datetime, silent_before: datetime, message: str) -> bool:
    """A job silent since `silent_before` → failed with `message`; False if its runner wrote
    again meanwhile (or it finished). One UPDATE, the condition in its WHERE."""
    abandoned = session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id, _silent_since(silent_before))
        .values(state="failed", finished_at=now, message=message)
        .execution_options(synchronize_session=False)
    )
    return bool(abandoned.rowcount)  # type: ignore[attr-defined]


def pending_before(session: Session, before: datetime) -> list[int]:
    """Jobs uploaded before `before` and never confirmed nor cancelled."""
    query = select(ImportJob.id).where(ImportJob.state == "pending", ImportJob.created_at < before)
    return list(session.scalars(query))


def reports_before(session: Session, before: datetime) -> list[int]:
    """Finished jobs, before `before`, whose error report is still kept."""
    query = select(ImportJob.id).where(ImportJob.has_report.is_(True), ImportJob.finished_at < before)
    return list(session.scalars(query))


def report_deleted(session: Session, job_ids: Sequence[int], *, now: datetime) -> None:
    if job_ids:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id.in_(job_ids))
            .values(has_report=False, report_deleted_at=now)
            .execution_options(synchronize_session=False)
        )


def claim_job(session: Session, job_id: int, *, runner: str, now: datetime, stale_before: datetime) -> bool:
    """Mark a queued job running for `runner`; also one whose runner went silent before
    `stale_before` (a worker killed mid-import: Celery hands the task to another, acks_late).
    False when another process runs it now or it has finished: a task delivered twice does
    the work once. One UPDATE with the condition in its WHERE, so two claimers cannot both win."""
    claimed = session.execute(
        update(ImportJob)
        .where(
            ImportJob.id == job_id,
            or_(
                ImportJob.state == "queued",
                (ImportJob.state == "running") & (ImportJob.heartbeat_at < stale_before),
            ),
        )
        .values(state="running", runner=runner[:200], started_at=now, heartbeat_at=now, **dict.fromkeys(_COUNTERS, 0))
        .execution_options(synchronize_session=False)
    )
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


def save_progress(session: Session, job_id: int, progress: Progress, *, now: datetime) -> None:
    session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id, ImportJob.state == "running")
        .values(heartbeat_at=now, **progress.values())
        .execution_options(synchronize_session=False)
    )


def finish_job(
    session: Session,
    job_id: int,
    *,
    state: str,
    progress: Progress,
    now: datetime,
    message: str = "",
    problems: Sequence[str] = (),
    delimiter: str = ",",
    has_report: bool = False,
    findings: dict[str, Any] | None = None,
) -> None:
    """The end of a run; `findings` replace the check's when given (the whole file's)."""
    if state not in FINISHED:
        raise ValueError(f"not a finished state: {state!r}")
    session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id)
        .values(
            state=state,
            finished_at=now,
            heartbeat_at=now,
            message=message,
            problems=list(problems),
            delimiter=delimiter,
            has_report=has_report,
            **({"findings": findings} if findings is not None else {}),
            **progress.values(),
        )
        .execution_options(synchronize_session=False)
    )


def get_job(session: Session, job_id: int) -> ImportJob | None:
    return session.get(ImportJob, job_id)


def recent_jobs(session: Session, *, limit: int = 50) -> list[ImportJob]:
    """The newest first (the past imports list)."""
    return list(
        session.scalars(select(ImportJob).order_by(ImportJob.created_at.desc(), ImportJob.id.desc()).limit(limit))
    )
