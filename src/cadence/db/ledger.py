"""The ledger's writes after a send: set-based UPDATEs on a connection held for one batch.

``operations/send_results.record_results`` decides what each result means (sent, retry, failed, next step); the
statements that write it are here. Why they are shaped like this (bench/send_throughput.py,
docs/performance.md): recording through the ORM (three ``session.get`` per email, attribute
sets, autoflush) cost ~1.5 ms per email, more than the SMTP conversation, so a group is a few
executemany UPDATEs built once at import (on PostgreSQL the sent ones are a single statement),
and every UPDATE of a delivery checks this claim's lease token: a worker that stalled past its
lease can no longer mark rows another worker owns. On PostgreSQL the batch's connection commits
asynchronously (``ledger_connection``; ledger.py says what that costs and how it is made safe).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Table, bindparam, text, update

from cadence.db.models import Delivery, Enrollment, UTCDateTime

__all__ = [
    "SentRow",
    "ledger_connection",
    "mark_sent_and_advance",
    "write_group",
]

_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_ENROLLMENTS: Table = Enrollment.__table__  # type: ignore[assignment]


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


class SentRow(NamedTuple):
    """One sent delivery of a drip step and where its enrollment goes next."""

    delivery_id: int
    lease_token: str
    step_id: str
    segment_id: str
    content_hash: str
    message_id: str
    provider_message_id: str | None
    next_step: int
    next_send_at: datetime | None  # None: that was the last step


def mark_sent_and_advance(conn: Connection, now: datetime, rows: Sequence[SentRow]) -> None:
    """PostgreSQL: :data:`_SENT_AND_ADVANCE_PG` for `rows` (drip deliveries with an
    enrollment), one array per column (timestamps as naive UTC, as UTCDateTime stores them)."""
    if not rows:
        return
    ids, tokens, step_ids, segment_ids, hashes, message_ids, provider_ids, next_steps, next_ats = zip(
        *rows, strict=True
    )
    conn.execute(
        _SENT_AND_ADVANCE_PG,
        {
            "now": now,
            "ids": _array_literal(ids),
            "tokens": _array_literal(tokens),
            "step_ids": _array_literal(step_ids),
            "segment_ids": _array_literal(segment_ids),
            "content_hashes": _array_literal(hashes),
            "message_ids": _array_literal(message_ids),
            "provider_ids": _array_literal(provider_ids),
            "next_steps": _array_literal(next_steps),
            "next_ats": _array_literal([_naive_utc(at) for at in next_ats]),
            "dones": _array_literal([at is None for at in next_ats]),
        },
    )


def _array_literal(values: Sequence[object]) -> str:
    """`values` as PostgreSQL's text form of an array, which the statement's ``CAST(:x AS
    type[])`` reads (every element double-quoted with ``\\`` and ``"`` escaped, None as NULL;
    PostgreSQL docs, "Array Value Input"). psycopg adapts a Python list element by element in
    Python (~10 µs per email for the ten columns, issue 15); one string per column is one C dump.
    ``str`` of an int, a bool and a naive datetime is what the element types read."""
    return (
        "{"
        + ",".join(
            "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values
        )
        + "}"
    )


def _naive_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def write_group(
    conn: Connection,
    *,
    sent: list[dict[str, Any]],
    advanced: list[dict[str, Any]],
    completed: list[dict[str, Any]],
    retry: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> None:
    """The rest of a group's results, one executemany per kind of change (the ``b_*``
    parameters of the statements above; send_results.record_results builds them)."""
    for statement, rows in (
        (_MARK_SENT, sent),
        (_ADVANCE, advanced),
        (_COMPLETE, completed),
        (_RETRY, retry),
        (_FAIL, failed),
    ):
        if rows:
            conn.execute(statement, rows)
