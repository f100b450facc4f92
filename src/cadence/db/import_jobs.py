"""The console's import jobs (issue 14): one row per CSV uploaded in the staff console, holding
what the job page shows while it runs and after.

The table is in this module with its SQL (as ``staff_models.py`` sits beside ``staff.py``): the
only writers are the upload (:func:`insert_job`) and the process running the import
(:func:`claim_job`, :func:`save_progress`, :func:`finish_job`). Progress is written in short
transactions of its own, never in the import's: an all-or-nothing import holds one transaction
for the whole file, and the job page must see the counts move while it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, String, Text, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from cadence.db.models import Base, BigId, UTCDateTime

STATES = ("queued", "running", "done", "rejected", "failed")
FINISHED = ("done", "rejected", "failed")


class ImportJob(Base):
    """One console import. ``state``: queued → running → done (the rows are in), rejected (an
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
) -> int:
    """A queued job; its id (the caller names the stored file after it)."""
    job = ImportJob(
        state="queued",
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
) -> None:
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
