"""Send-rate limits shared by every worker process and machine (``?rate=14/s`` on any URL).

Providers cap the send rate per account (SES "maximum send rate", Postmark and Mailgun return
429), not per process, so the budget must be shared: :class:`RedisTokenBucket` keeps one token
bucket in Redis, updated by a single Lua script (atomic: Redis runs scripts one at a time) that
reads the Redis server's ``TIME``, so the clocks of the worker machines never matter.

Semantics, for rate ``r`` per second and bucket size ``burst`` (``?burst=N``, default 1):

* the bucket holds at most ``burst`` tokens and refills continuously at ``r`` per second; each
  message takes one token. Callers *reserve* tokens: the script takes them even when that puts
  the bucket in debt and answers how long to wait, so every caller gets a fixed slot in one
  round trip, in arrival order (the "virtual scheduling" form of GCRA, ITU-T I.371);
* over any window of T seconds, at most ``burst + r*T`` tokens are granted; for a half-open
  window and whole numbers, at most ``burst + r*T - 1``. With the default ``burst=1`` grants
  are spaced at least ``1/r`` apart, so **no 1-second window holds more than r grants** on the
  Redis clock. A bigger burst buys nothing for bulk sending and costs exactly that guarantee:
  ``burst = r`` allows ``2r - 1`` in one second (a full bucket, then its refill);
* a grant is a promise about the *start* of a send. What the receiving server sees is shifted by
  the delay from grant to arrival (Redis reply, sleep wake-up, scheduling, network); if that delay
  varies by J seconds, a 1-second window at the server holds at most ``burst + r*(1 + J) - 1``.
  tests/test_ratelimit.py asserts exactly ``r`` on the Redis clock, and at the SMTP server
  ``r + burst`` when J < 1/r (one more per further 1/r of measured J; on a loaded 2-core test box
  J reached ~70 ms). Against a provider's hard limit, configure a little headroom
  (``rate=13/s`` for 14/s).

Without Redis (no ``CADENCE_REDIS_URL``), :class:`LocalTokenBucket` limits each *process* on its
own: N worker processes then send up to N times the rate. Redis configured but unreachable is an
error (``TransientSendError``), never a silent fallback to a limit that would be too loose.

:class:`RateLimitedTransport` wraps any transport: batches are cut into chunks of at most
``burst`` messages (an HTTP batch of 500 would otherwise be a burst of 500), each chunk reserving
one token per message before it is handed to the inner transport.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cadence.core.message import OutgoingMessage
from cadence.errors import TransientSendError
from cadence.monitoring import metrics
from cadence.transports.base import RefusalHook, SendResult, Transport

if TYPE_CHECKING:
    import redis

__all__ = ["LocalTokenBucket", "Rate", "RateLimitedTransport", "RateLimiter", "RedisTokenBucket"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` tokens per second, at most ``burst`` at once."""

    per_second: float
    burst: int = 1

    @classmethod
    def parse(cls, text: str, burst: str | None = None) -> Rate:
        """``14/s``, ``600/m``, ``10000/h``, ``50000/d``; ``burst`` a whole number >= 1."""
        count, slash, unit = text.strip().partition("/")
        try:
            amount = float(count)
        except ValueError:
            amount = math.nan
        if not slash or unit not in _UNITS or not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"rate={text!r}: expected a positive number per s, m, h or d, like rate=14/s")
        size = 1
        if burst is not None:
            if not burst.isdigit() or int(burst) < 1:
                raise ValueError(f"burst={burst!r}: expected a whole number >= 1")
            size = int(burst)
        return cls(amount / _UNITS[unit], size)


class RateLimiter(Protocol):
    rate: Rate

    def acquire(self, tokens: int = 1) -> float:
        """Block until ``tokens`` may be used; return the grant time on the limiter's clock."""
        ...


# KEYS[1]: the bucket (a hash: tokens, at). ARGV: rate per second, burst, tokens wanted, max wait.
# Returns {wait seconds, grant time, reserved 0/1} as strings (Redis would truncate Lua numbers).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then
  tokens, at = burst, now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local left = tokens - want
local wait = 0
if left < 0 then
  wait = -left / rate
end
if wait > max_wait then
  return {string.format('%.6f', wait), string.format('%.6f', now + wait), '0'}
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', left), 'at', string.format('%.6f', at))
redis.call('PEXPIRE', KEYS[1], math.ceil(((burst - left) / rate + 1) * 1000))
return {string.format('%.6f', wait), string.format('%.6f', now + wait), '1'}
"""


class RedisTokenBucket:
    """One token bucket in Redis under ``key``, shared by everyone using the same key."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        rate: Rate,
        *,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.key = key
        self._client = client
        self._script = client.register_script(_RESERVE)
        self._max_wait = max_wait
        self._sleep = sleep

    def reserve(self, tokens: int = 1) -> tuple[float, float, bool]:
        """One atomic round trip: (seconds to wait, grant time on the Redis clock, reserved?)."""
        import redis as redis_module

        if not 1 <= tokens <= self.rate.burst:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.rate.burst}")
        try:
            wait, granted, reserved = self._script(
                keys=[self.key], args=[repr(self.rate.per_second), self.rate.burst, tokens, self._max_wait]
            )
        except redis_module.RedisError as exc:
            raise TransientSendError(f"rate limiter: Redis unavailable ({exc})") from exc
        return float(wait), float(granted), reserved in (b"1", "1")

    def acquire(self, tokens: int = 1) -> float:
        while True:
            wait, granted, reserved = self.reserve(tokens)
            if reserved:
                if wait > 0:
                    self._sleep(wait)
                return granted
            # Queue longer than max_wait: come back later rather than hold a far-away slot.
            self._sleep(min(wait - self._max_wait, self._max_wait) + 0.001)


class LocalTokenBucket:
    """The same bucket in this process only (used when no Redis is configured).

    Limits one process: N worker processes together send up to N times ``rate``.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(rate.burst)
        self._at = clock()

    def acquire(self, tokens: int = 1) -> float:
        if not 1 <= tokens <= self.rate.burst:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.rate.burst}")
        with self._lock:
            now = self._clock()
            if now > self._at:
                self._tokens = min(self.rate.burst, self._tokens + (now - self._at) * self.rate.per_second)
                self._at = now
            self._tokens -= tokens
            wait = max(0.0, -self._tokens / self.rate.per_second)
        if wait > 0:
            self._sleep(wait)
        return now + wait


class RateLimitedTransport:
    """Any transport, paced by a limiter; see the module docstring."""

    def __init__(self, inner: Transport, limiter: RateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter
        self.needs_mime = inner.needs_mime
        #: For each message of the last ``send_many`` that went out, its grant time on the
        #: limiter's clock (Redis TIME, or this process's monotonic clock): logs and tests.
        self.last_grants: list[float] = []

    def send_many(
        self, messages: Sequence[tuple[OutgoingMessage, bytes]], on_refused: RefusalHook | None = None
    ) -> list[SendResult]:
        results: list[SendResult] = []
        self.last_grants = []
        size = self.limiter.rate.burst
        for start in range(0, len(messages), size):
            chunk = messages[start : start + size]
            try:
                asked = time.monotonic()
                granted = self.limiter.acquire(len(chunk))
                metrics.observe_rate_limit_wait(time.monotonic() - asked)
                self.last_grants += [granted] * len(chunk)
                results += self.inner.send_many(chunk, _shifted(on_refused, start))
            except TransientSendError as exc:
                if not results:
                    raise
                # Earlier chunks went out: report them, and the rest as not attempted.
                results += [SendResult("transient", detail=f"not attempted: {exc}") for _ in messages[start:]]
                break
        return results

    def close(self) -> None:
        self.inner.close()


def _shifted(on_refused: RefusalHook | None, offset: int) -> RefusalHook | None:
    """``on_refused`` for a chunk that starts at ``offset`` of the caller's messages."""
    if on_refused is None:
        return None
    hook = on_refused
    return lambda index, result: hook(offset + index, result)
