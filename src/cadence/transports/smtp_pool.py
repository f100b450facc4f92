"""Several SMTP connections used at once by one worker process (``?connections=N``, issue 15).

One connection sends one message at a time: each waits for the server's replies (two round
trips with PIPELINING, see :mod:`.smtp`), and the process sits idle meanwhile. ``N`` connections
each send a share of a group in their own thread, so the waits overlap and one process keeps
the server busy without a process per connection (a Python process costs ~70-110 MB; a
connection and a thread cost a socket and a stack). The socket I/O releases the GIL; the
per-message Python work does not, so a few connections are enough: more only add contention.

What stays the same as one connection (the :class:`~cadence.transports.base.Transport` contract):

- ``send_many`` returns one result per message, in order; a group's share on a connection keeps
  the order of its messages, and the shares are contiguous slices of the group.
- ``on_refused(index, result)`` is called with the index in the *whole* group, one call at a time
  (a lock: the ledger's connection is not thread-safe), before the connection that learned the
  refusal sends its next message. If it raises, the other connections finish their share first
  (their results are then unrecorded, like a crash within a group: the duplicate window stays at
  most one group) and the first exception is raised.
- ``TransientSendError`` (or ``ConfigError``) only when *no* connection could send anything;
  when some could, the unreachable share comes back as ``transient`` results, never a raise, so
  what was accepted reaches the ledger.
- The duplicate window after a crash is unchanged: it is the group (``CADENCE_COMMIT_EVERY``
  messages, about 0.1 s), however many connections carry it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import SplitResult

from cadence.core.message import OutgoingMessage
from cadence.errors import ConfigError, TransientSendError
from cadence.transports.base import RefusalHook, SendResult
from cadence.transports.smtp import SmtpTransport

__all__ = ["MAX_CONNECTIONS", "SmtpPool"]

MAX_CONNECTIONS = 32  # a typo (connections=500) must not open hundreds of sessions to a relay

Share = Sequence[tuple[OutgoingMessage, bytes]]


class SmtpPool:
    """``connections`` :class:`SmtpTransport` instances, each driven by one thread at a time."""

    needs_mime = True

    def __init__(self, members: Sequence[SmtpTransport]) -> None:
        if not members:
            raise ValueError("an SMTP pool needs at least one connection")
        self.members = list(members)
        self._executor: ThreadPoolExecutor | None = None
        self._hook_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: SplitResult, params: dict[str, str]) -> SmtpTransport | SmtpPool:
        """``connections=N`` (default 1: a plain :class:`SmtpTransport`) plus the options of
        :meth:`SmtpTransport.from_url`, which every connection shares."""
        text = params.pop("connections", "1")
        if not text.isdigit() or not 1 <= int(text) <= MAX_CONNECTIONS:
            raise ValueError(f"connections={text!r}: expected a whole number from 1 to {MAX_CONNECTIONS}")
        count = int(text)
        if count == 1:
            return SmtpTransport.from_url(url, params)
        members = []
        rest: dict[str, str] = {}
        for _ in range(count):
            rest = dict(params)
            members.append(SmtpTransport.from_url(url, rest))
        params.clear()
        params.update(rest)  # what no connection understood: the registry reports it
        return cls(members)

    @property
    def connections_opened(self) -> int:
        return sum(m.connections_opened for m in self.members)

    def send_many(self, messages: Share, on_refused: RefusalHook | None = None) -> list[SendResult]:
        shares = _split(len(messages), len(self.members))
        if len(shares) <= 1:
            return self.members[0].send_many(messages, on_refused)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(len(self.members) - 1, thread_name_prefix="smtp")
        failures: list[BaseException] = []

        def run(k: int) -> list[SendResult] | BaseException:
            start, end = shares[k]
            hook = None if on_refused is None else self._hook(on_refused, start, failures)
            try:
                return self.members[k].send_many(messages[start:end], hook)
            except BaseException as exc:  # judged below, once every share is done
                return exc

        # The first share runs in this thread (no hand-over for it); the others in the pool.
        futures: list[Future[list[SendResult] | BaseException]] = [
            self._executor.submit(run, k) for k in range(1, len(shares))
        ]
        outcomes = [run(0), *(f.result() for f in futures)]
        if failures:
            raise failures[0]
        return _merge(outcomes, shares)

    def _hook(self, on_refused: RefusalHook, offset: int, failures: list[BaseException]) -> RefusalHook:
        def hook(index: int, result: SendResult) -> None:
            with self._hook_lock:
                if failures:  # the ledger already failed for another share: stop this one too
                    raise failures[0]
                try:
                    on_refused(offset + index, result)
                except BaseException as exc:
                    failures.append(exc)
                    raise

        return hook

    def close(self) -> None:
        """QUIT every connection; stop the threads. Safe to call twice."""
        for member in self.members:
            member.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _split(count: int, connections: int) -> list[tuple[int, int]]:
    """Contiguous (start, end) slices of `count` messages over at most `connections`, sizes
    differing by at most one."""
    used = min(count, connections)
    if used <= 1:
        return [(0, count)]
    size, extra = divmod(count, used)
    bounds, start = [], 0
    for k in range(used):
        end = start + size + (1 if k < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def _merge(outcomes: list[list[SendResult] | BaseException], shares: list[tuple[int, int]]) -> list[SendResult]:
    """The shares' results in order. A share that could not connect at all (nothing of it was
    sent) becomes ``transient`` results, unless no share sent anything: then its error is raised,
    as one connection would (the caller puts the batch back without counting an attempt)."""
    unusable = (TransientSendError, ConfigError)
    if all(isinstance(o, unusable) for o in outcomes):
        first = outcomes[0]
        assert isinstance(first, BaseException)
        raise first
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, unusable):
            raise outcome  # a bug, not an SMTP condition: as loud as with one connection
    results: list[SendResult] = []
    for outcome, (start, end) in zip(outcomes, shares, strict=True):
        if isinstance(outcome, BaseException):
            detail = f"not attempted: {outcome}"
            results += [SendResult("transient", detail=detail) for _ in range(end - start)]
        else:
            results += outcome
    return results
