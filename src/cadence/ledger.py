"""Recording send results in the ledger: set-based UPDATEs, one transaction per group.

Why this shape (bench/send_throughput.py, docs/performance.md): recording through the ORM
(three ``session.get`` per email, attribute sets, autoflush) cost ~1.5 ms per email, more than
the SMTP conversation. Here every row the send path needs was already loaded when the batch was
prepared, the enrollment's next due time was computed then too (``now`` is fixed per batch),
and recording a group is a few set-based UPDATEs (on PostgreSQL the sent ones are a single
statement) and a COMMIT on a connection held for the batch.

On PostgreSQL the ledger connection runs with ``synchronous_commit = off``: COMMIT returns
before the WAL reaches disk. A *worker* crash loses nothing (the commit is in the server); a
*database* crash can lose the last ~0.6 s of ``sent`` marks (3 × wal_writer_delay). The worker
still holds those results and writes them again when the server is back (batch_ledger.py, issue
#9); permanent refusals commit synchronously, and a batch's commits are flushed before the
worker lets go of its results. So a database restart re-sends nothing; only a database crash with the
death of the worker (or an outage longer than the lease) can, with the same Message-ID.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, text, update
from sqlalchemy.orm import Session

from cadence.core import drip_policy
from cadence.core.message import OutgoingMessage
from cadence.db.models import Delivery, Enrollment, UTCDateTime
from cadence.subscribers import suppress
from cadence.transports.base import SendResult

__all__ = [
    "PreparedSend",
    "SendOutcome",
    "ledger_connection",
    "record_results",
]

_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_ENROLLMENTS: Table = Enrollment.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class PreparedSend:
    """One rendered message and everything needed to record what happens to it."""

    delivery_id: int
    lease_token: str
    message: OutgoingMessage
    mime: bytes
    step_id: str
    segment_id: str
    content_hash: str
    attempts: int
    enrollment_id: int | None
    subscriber_email: str
    next_step: int
    next_send_at: datetime | None  # None: that was the last step


@dataclass
class SendOutcome:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    postponed: int = 0

    def add(self, other: SendOutcome) -> None:
        for name in ("sent", "retrying", "failed", "skipped", "postponed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@contextmanager
def ledger_connection(engine: Engine) -> Iterator[Connection]:
    """A connection held for one batch; on PostgreSQL its commits do not wait for the WAL flush
    (see the module docstring). The setting is reset before the connection goes back to the pool,
    so no other transaction of this process inherits it."""
    with engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql("SET synchronous_commit TO OFF")
            conn.commit()
        try:
            yield conn
        finally:
            if postgres and not conn.invalidated:
                conn.rollback()
                conn.exec_driver_sql("RESET synchronous_commit")
                conn.commit()


# Built once: constructing and cache-keying these per call cost ~0.5 ms per group (bench).
_MINE = (
    (_DELIVERIES.c.id == bindparam("b_id"))
    & (_DELIVERIES.c.state == "sending")
    & (_DELIVERIES.c.lease_token == bindparam("b_token"))
)
_ACTIVE = (_ENROLLMENTS.c.id == bindparam("b_id")) & (_ENROLLMENTS.c.state == "active")
_MARK_SENT = (
    update(_DELIVERIES)
    .where(_MINE)
    .values(
        state="sent",
        sent_at=bindparam("b_now"),
        step_id=bindparam("b_step_id"),
        segment_id=bindparam("b_segment_id"),
        content_hash=bindparam("b_content_hash"),
        message_id=bindparam("b_message_id"),
        provider_message_id=bindparam("b_provider_id"),
        lease_expires_at=None,
        last_error="",
    )
)
_ADVANCE = (
    update(_ENROLLMENTS)
    .where(_ACTIVE)
    .values(last_sent_at=bindparam("b_now"), next_step=bindparam("b_next_step"), next_send_at=bindparam("b_next_at"))
)
_COMPLETE = (
    update(_ENROLLMENTS)
    .where(_ACTIVE)
    .values(
        last_sent_at=bindparam("b_now"),
        next_step=bindparam("b_next_step"),
        next_send_at=None,
        state="completed",
        ended_at=bindparam("b_now"),
        end_reason="all steps sent",
    )
)
_RETRY = (
    update(_DELIVERIES)
    .where(_MINE)
    .values(
        state="queued",
        not_before=bindparam("b_not_before"),
        enqueued_at=None,
        lease_expires_at=None,
        last_error=bindparam("b_error"),
    )
)
_FAIL = update(_DELIVERIES).where(_MINE).values(state="failed", lease_expires_at=None, last_error=bindparam("b_error"))
# PostgreSQL: mark a group's deliveries sent and move their enrollments on in ONE statement;
# the rows travel as arrays (unnest), so the server plans and starts one UPDATE pair per group
# instead of one per email (and, against the two-statement form, saves a round trip). An
# enrollment moves only if this worker still owned its delivery, which two statements cannot
# express.
_SENT_AND_ADVANCE_PG = text(
    """
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:tokens AS text[]), CAST(:step_ids AS text[]),
            CAST(:segment_ids AS text[]), CAST(:content_hashes AS text[]), CAST(:message_ids AS text[]),
            CAST(:provider_ids AS text[]), CAST(:next_steps AS integer[]), CAST(:next_ats AS timestamp[]),
            CAST(:dones AS boolean[])
        ) AS v(id, token, step_id, segment_id, content_hash, message_id, provider_id, next_step, next_at, done)
    ), done AS (
        UPDATE deliveries d
        SET state = 'sent', sent_at = :now, step_id = v.step_id, segment_id = v.segment_id,
            content_hash = v.content_hash, message_id = v.message_id,
            provider_message_id = v.provider_id, lease_expires_at = NULL, last_error = ''
        FROM v
        WHERE d.id = v.id AND d.state = 'sending' AND d.lease_token = v.token
        RETURNING d.enrollment_id, v.next_step, v.next_at, v.done
    )
    UPDATE enrollments e
    SET last_sent_at = :now, next_step = done.next_step, next_send_at = done.next_at,
        state = CASE WHEN done.done THEN 'completed' ELSE e.state END,
        ended_at = CASE WHEN done.done THEN :now ELSE e.ended_at END,
        end_reason = CASE WHEN done.done THEN 'all steps sent' ELSE e.end_reason END
    FROM done
    WHERE e.id = done.enrollment_id AND e.state = 'active'
    """
).bindparams(bindparam("now", type_=UTCDateTime()))


def _as_arrays(sent: list[tuple[PreparedSend, SendResult]], now: datetime) -> dict[str, Any]:
    """_SENT_AND_ADVANCE_PG's parameters: one array per column (timestamps as naive UTC,
    as UTCDateTime stores them)."""
    return {
        "now": now,
        "ids": [p.delivery_id for p, _ in sent],
        "tokens": [p.lease_token for p, _ in sent],
        "step_ids": [p.step_id for p, _ in sent],
        "segment_ids": [p.segment_id for p, _ in sent],
        "content_hashes": [p.content_hash for p, _ in sent],
        "message_ids": [p.message.message_id for p, _ in sent],
        "provider_ids": [r.provider_message_id for _, r in sent],
        "next_steps": [p.next_step for p, _ in sent],
        "next_ats": [_naive_utc(p.next_send_at) for p, _ in sent],
        "dones": [p.next_send_at is None for p, _ in sent],
    }


def _naive_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def record_results(
    conn: Connection, group: Sequence[PreparedSend], results: Sequence[SendResult], now: datetime, *, max_attempts: int
) -> SendOutcome:
    """Apply one group's results; call inside a transaction on `conn`."""
    outcome = SendOutcome()
    sent: list[dict[str, Any]] = []
    advanced: list[dict[str, Any]] = []
    completed: list[dict[str, Any]] = []
    retry: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    bounced: list[tuple[str, str]] = []
    combined: list[tuple[PreparedSend, SendResult]] = []
    postgres = conn.dialect.name == "postgresql"
    for prepared, result in zip(group, results, strict=True):
        if result.status == "sent":
            outcome.sent += 1
            if postgres and prepared.enrollment_id is not None:
                combined.append((prepared, result))
                continue
            delivery_row = {
                "b_id": prepared.delivery_id,
                "b_token": prepared.lease_token,
                "b_now": now,
                "b_step_id": prepared.step_id,
                "b_segment_id": prepared.segment_id,
                "b_content_hash": prepared.content_hash,
                "b_message_id": prepared.message.message_id,
                "b_provider_id": result.provider_message_id,
            }
            sent.append(delivery_row)
            _move_on(prepared, now, advanced, completed)
        elif result.status == "transient" and (
            not_before := drip_policy.retry_at(
                now, prepared.attempts, max_attempts=max_attempts, retry_after=result.retry_after
            )
        ):
            detail = f"attempt {prepared.attempts}: {result.detail}"[:2000]
            retry.append(
                {
                    "b_id": prepared.delivery_id,
                    "b_token": prepared.lease_token,
                    "b_not_before": not_before,
                    "b_error": detail,
                }
            )
            outcome.retrying += 1
        else:
            error = (result.detail or "gave up after retries")[:2000]
            failed.append({"b_id": prepared.delivery_id, "b_token": prepared.lease_token, "b_error": error})
            outcome.failed += 1
            if drip_policy.series_goes_on_after_failure(result.status):
                # This step is lost, the series goes on with the next one.
                _move_on(prepared, now, advanced, completed)
            else:
                bounced.append((prepared.subscriber_email, result.detail))  # suppress() ends the drip
    if combined:
        conn.execute(_SENT_AND_ADVANCE_PG, _as_arrays(combined, now))
    for statement, rows in (
        (_MARK_SENT, sent),
        (_ADVANCE, advanced),
        (_COMPLETE, completed),
        (_RETRY, retry),
        (_FAIL, failed),
    ):
        if rows:
            conn.execute(statement, rows)
    if bounced:
        # A 5xx for this recipient: never try the address again (issue #4). Rare: the ORM is fine.
        with Session(bind=conn) as session:
            for email, detail in bounced:
                suppress(session, email, "hard_bounce", now, detail)
            session.flush()
    return outcome


def _move_on(
    prepared: PreparedSend, now: datetime, advanced: list[dict[str, Any]], completed: list[dict[str, Any]]
) -> None:
    """Schedule the enrollment's next step (computed when the batch was prepared), or complete it."""
    if prepared.enrollment_id is None:
        return
    row = {"b_id": prepared.enrollment_id, "b_now": now, "b_next_step": prepared.next_step}
    if prepared.next_send_at is None:
        completed.append(row)
    else:
        advanced.append({**row, "b_next_at": prepared.next_send_at})
