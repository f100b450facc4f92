"""Per-IP limits on POSTs (429 beyond them).

Where the counters live, and why:

- **Redis** when ``settings.redis_url`` is set: one counter per IP and window shared by every
  web process (``SET NX EX`` + ``INCR`` in one MULTI, so the first hit also sets the expiry and
  nothing can leave a counter without one).
- **In-process** otherwise: a dict guarded by a lock. Per-IP counters are short-lived and
  written on every POST; putting them in the database would turn each form post into an extra
  write transaction (and on SQLite, a global write lock) to protect the database from load.
  The cost is that N web processes allow N times the limit; deployments with several
  processes have Redis anyway (the Celery broker).

The per-address limit (one confirmation email per hour) is not here: it is a timestamp on the
subscriber row, checked inside the signup transaction (operations/signup.py), so it is exact
across processes with or without Redis. If Redis fails we let requests through and log it:
the per-address limit and double opt-in still stop the harm a flood could do.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cadence.errors import InputError

log = logging.getLogger(__name__)


class RateLimited(InputError):
    """Too many requests from one client; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many requests; try again in {retry_after} seconds")


@dataclass(frozen=True)
class Limit:
    requests: int
    seconds: int


class Limiter(Protocol):
    def hit(self, key: str, limit: Limit) -> int:
        """Count one request for `key`; 0 if allowed, else seconds until it would be."""
        ...


class MemoryLimiter:
    """Fixed windows in a dict; forgets windows that ended (checked every 1024 hits)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}
        self._hits = 0

    def hit(self, key: str, limit: Limit) -> int:
        now = self._clock()
        with self._lock:
            self._hits += 1
            if self._hits % 1024 == 0:
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
            ends, count = self._windows.get(key, (0.0, 0))
            if ends <= now:
                ends, count = now + limit.seconds, 0
            count += 1
            self._windows[key] = (ends, count)
            return 0 if count <= limit.requests else max(1, math.ceil(ends - now))


class RedisLimiter:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def hit(self, key: str, limit: Limit) -> int:
        import redis

        name = f"cadence:ratelimit:{key}"
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(name, 0, ex=limit.seconds, nx=True)
            pipe.incr(name)
            pipe.ttl(name)
            _, count, ttl = pipe.execute()
        except redis.RedisError as exc:
            log.warning("rate limiter: Redis unavailable, allowing the request (%s)", exc)
            return 0
        return 0 if int(count) <= limit.requests else max(1, int(ttl))


def make_limiter(redis_url: str | None) -> Limiter:
    return RedisLimiter(redis_url) if redis_url else MemoryLimiter()
