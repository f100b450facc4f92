"""Shared send-rate limits: four worker processes, one Redis token bucket, measured at the server.

The bound asserted (see cadence.transports.ratelimit): a token bucket of rate r and size b grants
at most ``b + r*T - 1`` tokens in any half-open window of T seconds, so with the default b = 1
no 1-second window holds more than r grants on the Redis clock. Measured at the SMTP server,
arrivals are shifted by the delay from grant to arrival; when that delay varies by less than 1/r
(50 ms) the bound there is r + b = 21, and it grows by one for each further 50 ms of jitter,
which the test measures rather than assumes.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from cadence.core.message import Address, OutgoingMessage, build_mime, make_message_id
from cadence.errors import ConfigError, TransientSendError
from cadence.transports.ratelimit import LocalTokenBucket, Rate, RateLimitedTransport, RedisTokenBucket
from cadence.transports.registry import open_transport
from tests.support.smtpd import SmtpSink

WORKERS = 4
RATE = 20
BURST = 1  # the default
SECONDS = 3.0


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window [t, t + window) (tiny slack for float sums)."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + window - 1e-6:
            j += 1
        best = max(best, j - i)
    return best


def _pair(worker: int, n: int) -> tuple[OutgoingMessage, bytes]:
    msg = OutgoingMessage(
        sender=Address("news@example.com"),
        to=Address(f"w{worker}.{n}@example.org"),
        subject=f"{worker}/{n}",
        html="",
        text="paced\n",
        message_id=make_message_id(worker * 10_000 + n, "s", "example.com"),
    )
    return msg, build_mime(msg, date=datetime(2024, 5, 1, tzinfo=UTC))


def _send_worker(url: str, redis_url: str, data_dir: str, ready: Any, out: Any) -> None:
    """One worker process: send through the rate-limited transport until ``stop_at`` (wall clock);
    report (recipient, grant time on the Redis clock) for every message sent."""
    index = int(multiprocessing.current_process().name.rsplit("-", 1)[-1])
    transport = open_transport(url, data_dir=Path(data_dir), redis_url=redis_url)
    assert isinstance(transport, RateLimitedTransport) and isinstance(transport.limiter, RedisTokenBucket)
    sent: list[tuple[str, float]] = []
    ready.wait(timeout=60)  # all workers imported and ready: start together
    stop_at = time.monotonic() + SECONDS
    try:
        while time.monotonic() < stop_at:
            batch = [_pair(index, len(sent) + k) for k in range(3)]  # batches of 3: chunked by the limiter
            results = transport.send_many(batch)
            assert [r.status for r in results] == ["sent"] * 3
            sent += [(msg.to.email, grant) for (msg, _), grant in zip(batch, transport.last_grants, strict=True)]
    finally:
        transport.close()
    out.put(sent)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


def test_four_processes_share_one_budget_measured_at_the_smtp_server(
    sink: SmtpSink, redis_url: str, tmp_path: Path
) -> None:
    context = multiprocessing.get_context("spawn")  # no fork of a process running server threads
    results = context.Queue()
    ready = context.Barrier(WORKERS)
    url = f"smtp://{sink.host}:{sink.port}?tls=none&rate={RATE}/s"
    workers = [
        context.Process(
            target=_send_worker,
            args=(url, redis_url, str(tmp_path), ready, results),
            name=f"sender-{n}",
        )
        for n in range(WORKERS)
    ]
    for process in workers:
        process.start()
    per_worker = [results.get(timeout=30) for _ in workers]
    for process in workers:
        process.join(timeout=10)
        assert process.exitcode == 0
    grants = {rcpt: grant for sent in per_worker for rcpt, grant in sent}
    received = sink.messages
    assert sorted(grants) == sorted(m.rcpt_tos[0] for m in received)
    assert all(len(sent) > 0 for sent in per_worker)  # every process got a share
    assert sink.connections == WORKERS  # and each kept its one connection

    # On the limiter's clock (Redis TIME): exactly the rate, grants at least 1/r apart.
    assert max_in_window(list(grants.values())) <= RATE
    # At the server (MAIL FROM arrival): r + burst, plus one per further 1/r of measured jitter in
    # the delay from grant to arrival (the two clocks differ by a fixed offset, so the spread of
    # the differences is the jitter). See the docstring of cadence.transports.ratelimit.
    arrivals = [m.started_at for m in received]
    delays = [m.started_at - grants[m.rcpt_tos[0]] for m in received]
    jitter = max(delays) - min(delays)
    allowed = RATE + BURST + int(jitter * RATE)
    assert max_in_window(arrivals) <= allowed, (max_in_window(arrivals), jitter)
    # not merely slow: over the run the shared budget is used
    assert len(received) >= (SECONDS - 0.5) * RATE, len(received)


def test_a_bigger_burst_allows_exactly_burst_plus_rate_minus_one_per_window(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    slept: list[float] = []
    bucket = RedisTokenBucket(client, "cadence:test:burst", Rate(10.0, 5), sleep=slept.append)
    grants = [bucket.acquire() for _ in range(30)]  # sleep is recorded, not taken: a pure schedule
    assert grants[:5] == sorted(grants[:5]) and grants[4] - grants[0] < 0.05  # the burst: at once
    assert max_in_window(grants) == 5 + 10 - 1
    assert slept[-1] == pytest.approx(2.5, abs=0.05)  # the 30th waits for (30 - 5) tokens at 10/s


def test_the_local_bucket_paces_one_process_with_the_same_semantics() -> None:
    now = [100.0]
    bucket = LocalTokenBucket(Rate(4.0, 2), clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    grants = [bucket.acquire() for _ in range(10)]
    assert grants[:3] == [100.0, 100.0, 100.25]
    assert grants[-1] == pytest.approx(102.0)
    assert max_in_window(grants) == 2 + 4 - 1


def test_batches_are_cut_into_chunks_of_at_most_burst(sink: SmtpSink, tmp_path: Path) -> None:
    transport = open_transport(
        f"smtp://{sink.host}:{sink.port}?tls=none&rate=1000/s&burst=4", data_dir=tmp_path, redis_url=None
    )
    assert isinstance(transport, RateLimitedTransport) and isinstance(transport.limiter, LocalTokenBucket)
    try:
        results = transport.send_many([_pair(0, n) for n in range(10)])
    finally:
        transport.close()
    assert [r.status for r in results] == ["sent"] * 10


def test_redis_configured_but_down_is_transient_not_a_silent_fallback(sink: SmtpSink, tmp_path: Path) -> None:
    url = f"smtp://{sink.host}:{sink.port}?tls=none&rate=5/s"
    transport = open_transport(url, data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(TransientSendError, match="Redis unavailable"):
        transport.send_many([_pair(0, 0)])
    assert sink.messages == []


@pytest.mark.parametrize(
    ("text", "per_second"), [("14/s", 14.0), ("600/m", 10.0), ("7200/h", 2.0), ("86400/d", 1.0), ("0.5/s", 0.5)]
)
def test_rates_parse_per_unit(text: str, per_second: float) -> None:
    assert Rate.parse(text) == Rate(per_second, 1)


@pytest.mark.parametrize("bad", ["rate=14", "rate=0/s", "rate=-1/s", "rate=x/s", "rate=5/w", "rate=5/s&burst=0"])
def test_bad_rates_are_configuration_errors(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CADENCE_EMAIL_URL"):
        open_transport(f"outbox://?{bad}", data_dir=tmp_path, redis_url=None)
