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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from cadence.core import drip_policy
from cadence.core.message import OutgoingMessage
from cadence.db import ledger as db_ledger
from cadence.db.ledger import ledger_connection
from cadence.operations.subscribers import suppress
from cadence.transports.base import SendResult

__all__ = [
    "Composed",
    "PreparedSend",
    "SendOutcome",
    "composed",
    "ledger_connection",
    "record_results",
]

Composed = tuple[OutgoingMessage, bytes]  # the message and its MIME bytes (b"" for HTTP APIs)


@dataclass(frozen=True, slots=True)
class PreparedSend:
    """One checked delivery and everything needed to send it and record what happens to it.

    The message itself is built by ``compose`` when its group is sent, not when the batch is
    prepared (issue 15): a batch of 250 rendered emails held ~10 MB (HTML, text and MIME of
    ~40 KB each) for as long as it took to send; built group by group, a sending thread holds
    one group. ``compose`` may raise a :class:`~cadence.errors.CadenceError` (a template or an
    address that broke after validation): that delivery is recorded as failed."""

    delivery_id: int
    lease_token: str
    message_id: str
    compose: Callable[[], Composed]
    step_id: str
    segment_id: str
    content_hash: str
    attempts: int
    enrollment_id: int | None
    subscriber_email: str
    next_step: int
    next_send_at: datetime | None  # None: that was the last step


def composed(message: OutgoingMessage, mime: bytes) -> Callable[[], Composed]:
    """A ``compose`` for a message that was built already (transactional emails, tests)."""
    return lambda: (message, mime)


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
                "b_message_id": prepared.message_id,
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
        db_ledger.mark_sent_and_advance(
            conn,
            now,
            [
                db_ledger.SentRow(
                    p.delivery_id,
                    p.lease_token,
                    p.step_id,
                    p.segment_id,
                    p.content_hash,
                    p.message_id,
                    r.provider_message_id,
                    p.next_step,
                    p.next_send_at,
                )
                for p, r in combined
            ],
        )
    db_ledger.write_group(conn, sent=sent, advanced=advanced, completed=completed, retry=retry, failed=failed)
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
