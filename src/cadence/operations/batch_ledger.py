"""One batch's ledger writes, kept across a lost database connection (issue #9).

A worker that sent messages knows what happened to them; a database restart must not make it
forget. Every write of a batch goes through :class:`BatchLedger`: one transaction on a
connection held for the batch (:func:`cadence.operations.send_results.ledger_connection`). When that connection
is lost (the server restarted or failed over, the network dropped), the worker:

1. keeps every result of the batch in memory (it has them all: the batch is a few hundred rows);
2. reconnects with exponential backoff, but only while it surely still holds the lease (see
   ``_lease_safe_until``): after that another worker could take the rows over, so it gives up
   (the error propagates and the rows return after their lease: the documented duplicate
   window);
3. once the database answers, rewrites the results the database does not have. On PostgreSQL
   the ledger commits asynchronously (operations/send_results.py), so a server crash can forget the last commits
   before it: every delivery of the batch still ``sending`` under this claim's token whose
   result the worker holds is recorded again, and the lease on the rest is renewed;
4. runs the interrupted write again, and the batch goes on.

Every permanent refusal is committed synchronously (``durable``): a bounced address must never
be tried again because a database crash forgot its suppression. When the batch ends, whatever it
committed asynchronously is flushed to disk before the worker lets go of its results (one tiny
synchronous commit per batch: :meth:`BatchLedger.__exit__`). A refusal is recorded the moment
the transport reports it (:meth:`BatchLedger.refusal_hook`), not with its group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from cadence.clock import wall_now
from cadence.core import drip_policy
from cadence.db import queries
from cadence.operations.send_results import PreparedSend, SendOutcome, ledger_connection, record_results
from cadence.transports.base import RefusalHook, SendResult

__all__ = [
    "DATABASE_GONE",
    "BatchLedger",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Pair = tuple[PreparedSend, SendResult]

# The database went away (connection refused or reset, server shutting down or starting up):
# SQLAlchemy wraps psycopg's and sqlite3's OperationalError and InterfaceError in these.
DATABASE_GONE = (OperationalError, InterfaceError)


class BatchLedger:
    """The ledger of one leased batch; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        engine: Engine,
        delivery_ids: Sequence[int],
        token: str,
        *,
        lease: timedelta,
        now: datetime,
        max_attempts: int,
    ) -> None:
        self._engine = engine
        self._ids = list(delivery_ids)
        self._token = token
        self._lease = lease
        self._now = now  # the business clock, fixed per batch (operations/send_results.py)
        self._max_attempts = max_attempts
        self._recorded: list[Pair] = []  # every result written so far (perhaps lost by a crash)
        self._refusals_recorded: set[int] = set()  # delivery ids recorded through `refusal_hook`
        self._grants = [wall_now()]  # when the lease was granted: the claim just now, then renewals
        self._retrying = False
        self._unflushed = False  # an asynchronous commit since the last synchronous one
        self._stack: ExitStack | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> BatchLedger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._unflushed and not isinstance(exc, DATABASE_GONE):
                # Nobody holds this batch's results after this: make the asynchronous commits
                # durable. A synchronous commit flushes the WAL up to its own commit record, so all
                # earlier ones with it; txid_current() gives the transaction an id, hence a commit
                # record (an empty transaction writes none).
                self.write(lambda conn: conn.exec_driver_sql("SELECT txid_current()"), durable=True)
        finally:
            self._close(discard=False)

    # ------------------------------------------------------------------ writes

    def refusal_hook(self, group: Sequence[PreparedSend]) -> RefusalHook:
        """For ``transport.send_many(group, on_refused=...)``: record a permanent refusal the
        moment the transport reports it, in its own small synchronous commit, before the next
        message goes out. A crash can then repeat only successful sends, never a bounced one
        (issue #9); :meth:`record` leaves out the refusals recorded here."""

        def record_refusal(index: int, result: SendResult) -> None:
            pair = (group[index], result)
            if pair[0].delivery_id not in self._refusals_recorded:
                self.write(lambda conn: self._record(conn, [pair]), durable=True)
                self._recorded.append(pair)
                self._refusals_recorded.add(pair[0].delivery_id)

        return record_refusal

    def record(self, group: Sequence[PreparedSend], results: Sequence[SendResult]) -> SendOutcome:
        """Record one group's results, renewing the lease on the rest of the batch at its
        half-life."""
        pairs = list(zip(group, results, strict=True))
        outcome = SendOutcome(failed=sum(p.delivery_id in self._refusals_recorded for p in group))
        pairs = [pair for pair in pairs if pair[0].delivery_id not in self._refusals_recorded]
        refused = [pair for pair in pairs if pair[1].status == "permanent"]
        if refused:
            # A 5xx for the address the transport did not report at once: still its own small
            # synchronous commit before the group's, like `refusal_hook`.
            outcome.add(self.write(lambda conn: self._record(conn, refused), durable=True))
            self._recorded += refused
        others = [pair for pair in pairs if pair[1].status != "permanent"]
        if others:
            outcome.add(self.write(lambda conn: self._record(conn, others)))
            self._recorded += others
        return outcome

    def write(self, work: Callable[[Connection], T], *, durable: bool = False) -> T:
        """Run `work` in one transaction and return its result. On a lost connection: reconnect
        with backoff while the lease holds, rewrite lost results, run `work` again (so `work`
        must only write through `conn` and be safe to run twice: every ledger UPDATE checks this
        claim's lease token). Raises the database error once the lease would run out."""
        delay = drip_policy.FIRST_RECONNECT_DELAY
        while True:
            try:
                conn = self._connection()
                with conn.begin():
                    if durable and conn.dialect.name == "postgresql":
                        conn.exec_driver_sql("SET LOCAL synchronous_commit TO ON")
                    if self._retrying:
                        self._rewrite_lost(conn)
                    result = work(conn)
                    self._renew_if_due(conn)
                self._retrying = False
                # A synchronous commit flushes everything before it; an asynchronous one does not.
                self._unflushed = conn.dialect.name == "postgresql" and not durable
                return result
            except DATABASE_GONE as exc:
                self._close(discard=True)
                if wall_now() + timedelta(seconds=delay) >= self._lease_safe_until():
                    log.error(
                        "database unavailable until the lease runs out; %d results of this batch may be lost: %s",
                        len(self._recorded),
                        exc,
                    )
                    raise
                log.warning(
                    "database unavailable; %d results of this batch kept, retrying in %.2f s: %s",
                    len(self._recorded),
                    delay,
                    str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__,
                )
                time.sleep(delay)
                delay = drip_policy.next_reconnect_delay(delay)
                self._retrying = True

    def _record(self, conn: Connection, pairs: list[Pair]) -> SendOutcome:
        if self._retrying:  # an interrupted COMMIT may have gone through: write only what is missing
            mine = queries.still_leased(conn, [p.delivery_id for p, _ in pairs], self._token)
            pairs = [pair for pair in pairs if pair[0].delivery_id in mine]
        if not pairs:
            return SendOutcome()
        return record_results(
            conn, [p for p, _ in pairs], [r for _, r in pairs], self._now, max_attempts=self._max_attempts
        )

    def _rewrite_lost(self, conn: Connection) -> None:
        """After a reconnect: write again the results the database lost, renew the lease on
        the rest of the batch (a renewal may have been lost too)."""
        mine = queries.still_leased(conn, self._ids, self._token)
        lost = [pair for pair in self._recorded if pair[0].delivery_id in mine]
        if lost:
            log.warning("rewriting %d results the database lost in its restart", len(lost))
            record_results(conn, [p for p, _ in lost], [r for _, r in lost], self._now, max_attempts=self._max_attempts)
        recorded = {p.delivery_id for p, _ in self._recorded}
        self._renew(conn, [i for i in self._ids if i in mine and i not in recorded])

    def _renew_if_due(self, conn: Connection) -> None:
        # A slow server can make one batch outlast the lease; renew it for the rest of the batch
        # (drip_policy.lease_renewal_due). Only a process that stalls for half a lease can lose
        # its rows.
        if drip_policy.lease_renewal_due(self._grants[-1], self._lease, wall_now()):
            recorded = {p.delivery_id for p, _ in self._recorded}
            self._renew(conn, [i for i in self._ids if i not in recorded])

    def _renew(self, conn: Connection, ids: list[int]) -> None:
        now = wall_now()
        queries.renew_lease_on(conn, ids, now + self._lease, self._token)
        self._grants.append(now)

    def _lease_safe_until(self) -> datetime:
        """Until when no other worker can take the batch over (drip_policy.lease_safe_until)."""
        return drip_policy.lease_safe_until(self._grants, self._lease)

    # ------------------------------------------------------------------ the connection

    def _connection(self) -> Connection:
        if self._conn is None:
            stack = ExitStack()
            self._conn = stack.enter_context(ledger_connection(self._engine))
            self._stack = stack
        return self._conn

    def _close(self, *, discard: bool) -> None:
        conn, stack = self._conn, self._stack
        self._conn = self._stack = None
        if conn is None or stack is None:
            return
        if discard:
            conn.invalidate()  # never give a dead connection back to the pool
        try:
            stack.close()
        except DATABASE_GONE:
            if not discard:
                raise
