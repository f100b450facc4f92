"""Prometheus metrics: what the send path, the tick and the bounce handling record, and how a
process exposes them. docs/operations.md lists every metric and how to scrape it.

The send path calls one function per event (``count_sends``, ``observe_send``...), each a line
at the call site; this module owns the metric objects. Celery workers are prefork processes and
``cadence web --workers N`` runs several, so long-running commands call
:func:`start_process_metrics` first thing: it gives the run a fresh folder of its own for
prometheus-client's multiprocess mode (every process writes its values to memory-mapped files
there; whoever serves ``/metrics`` sums them). Without it (tests, one-shot commands) values live
in this process only.

Counts that are state, not events (due enrollments, queued, leased and retrying deliveries) are
read from the database when ``/metrics`` is scraped (:mod:`cadence.db.stats`), so they are
right whichever process changed the rows, and cost nothing between scrapes.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cadence.config import Settings, export_process_metrics_dir, process_metrics_dir
from cadence.errors import ConfigError

if TYPE_CHECKING:
    from datetime import datetime

    from cadence.operations.send_results import SendOutcome

log = logging.getLogger(__name__)

# Seconds per message from the transport's point of view: ~0.3 ms to a local relay with
# pipelining (docs/performance.md) up to the seconds a slow provider API can take.
_SEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = ("sent", "retrying", "failed", "skipped", "postponed")


@dataclass(frozen=True)
class _Instruments:
    sends: Counter
    send_seconds: Histogram
    ticks: Histogram
    tick_claimed: Counter
    tick_enqueued: Counter
    bounces: Counter
    complaints: Counter
    rate_limit_wait: Histogram


_instruments_lock = threading.Lock()


def _instruments() -> _Instruments:
    # Under a lock: in the threads pool of `cadence worker` two batches may record their first
    # metric at the same moment, and creating the instruments twice raises DuplicateTimeseries
    # (issue 15).
    with _instruments_lock:
        return _create_instruments()


@lru_cache(maxsize=1)
def _create_instruments() -> _Instruments:
    # Created on first use, not at import: by then start_process_metrics has chosen the value
    # class (multiprocess files or plain memory) for this process.
    return _Instruments(
        sends=Counter(
            "cadence_sends", "Deliveries handled by the send path, by outcome and transport", ["outcome", "transport"]
        ),
        send_seconds=Histogram(
            "cadence_send_seconds",
            "Transport time per message (a group's send_many time divided by its messages)",
            ["transport"],
            buckets=_SEND_BUCKETS,
        ),
        ticks=Histogram("cadence_tick_seconds", "Duration of a tick (claim + enqueue)", buckets=_TICK_BUCKETS),
        tick_claimed=Counter("cadence_tick_claimed", "Enrollments claimed into ledger rows by ticks"),
        tick_enqueued=Counter("cadence_tick_enqueued", "Deliveries handed to send tasks by ticks"),
        bounces=Counter("cadence_bounces", "Bounces recorded (DSNs and provider webhooks), by type", ["type"]),
        complaints=Counter("cadence_complaints", "Spam complaints recorded (feedback loops, provider webhooks)"),
        rate_limit_wait=Histogram(
            "cadence_rate_limit_wait_seconds",
            "Time a send waited for the shared rate limit (?rate= in CADENCE_EMAIL_URL)",
            buckets=_WAIT_BUCKETS,
        ),
    )


@lru_cache(maxsize=16)
def transport_label(email_url: str) -> str:
    """The transport's scheme (smtp, smtps, outbox, postmark, mailgun): never its credentials."""
    return email_url.split("://", 1)[0].lower()


# ---------------------------------------------------------------------------- recording


def count_sends(outcome: SendOutcome, email_url: str) -> None:
    """Count a batch's deliveries by outcome (sent, retrying, failed, skipped, postponed)."""
    label = transport_label(email_url)
    sends = _instruments().sends
    for name in OUTCOMES:
        n = getattr(outcome, name)
        if n:
            sends.labels(name, label).inc(n)


def observe_send(seconds: float, messages: int, email_url: str) -> None:
    """One transport call of `messages` messages took `seconds`: observed once per message."""
    if messages <= 0:
        return
    histogram = _instruments().send_seconds.labels(transport_label(email_url))
    each = seconds / messages
    for _ in range(messages):
        histogram.observe(each)


@contextmanager
def timed_tick() -> Iterator[None]:
    """Time one tick (Celery's tick task and ``cadence tick``)."""
    with _instruments().ticks.time():
        yield


def count_tick(claimed: int, enqueued: int) -> None:
    metrics = _instruments()
    metrics.tick_claimed.inc(claimed)
    metrics.tick_enqueued.inc(enqueued)


def count_feedback(kind: str) -> None:
    """A bounce or complaint event was applied (counted once, duplicates are not)."""
    if kind == "complaint":
        _instruments().complaints.inc()
    elif kind in ("hard_bounce", "soft_bounce"):
        _instruments().bounces.labels(kind.split("_", 1)[0]).inc()


def observe_rate_limit_wait(seconds: float) -> None:
    _instruments().rate_limit_wait.observe(max(0.0, seconds))


# ---------------------------------------------------------------------------- exposing


def start_process_metrics(role: str, settings: Settings) -> Path:
    """Set up multiprocess metrics for this run of `role` (worker, web): a fresh folder
    ``<metrics root>/<role>-<pid>`` (folders of earlier runs whose process is gone are removed,
    so a restart starts from zero, as Prometheus expects of a new process), exported to the
    children, removed at exit. If ``CADENCE_METRICS_PORT`` is set (workers), serve
    ``/metrics`` on it from a thread of this, the parent, process. Call before forking."""
    root = settings.metrics_root
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_runs(root, role)
    path = root / f"{role}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    export_process_metrics_dir(path)
    # prometheus-client picks its value class when it is imported, which may have happened before
    # the variable above existed; metric objects are created later (_instruments), with this one.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    owner = os.getpid()

    def remove_folder() -> None:
        if os.getpid() == owner:  # not in a forked child that runs atexit
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove_folder)
    if settings.metrics_port is not None and role != "web":
        try:
            start_http_server(settings.metrics_port, settings.metrics_host, registry=_registry())
        except OSError as exc:
            where = f"{settings.metrics_host}:{settings.metrics_port}"
            raise ConfigError(f"CADENCE_METRICS_PORT: cannot listen on {where}: {exc.strerror or exc}") from None
    return path


def _remove_stale_runs(root: Path, role: str) -> None:
    for folder in root.glob(f"{role}-*"):
        pid = folder.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _ThisProcess(Collector):
    """The default registry's metrics, for a process without a multiprocess folder."""

    def collect(self) -> Iterable[object]:  # type: ignore[override]
        return REGISTRY.collect()


def _registry(*extra: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    folder = process_metrics_dir()
    if folder is not None:
        MultiProcessCollector(registry, str(folder))  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    for collector in extra:
        registry.register(collector)
    return registry


_render_lock = threading.Lock()


def exposition(*extra: Collector) -> tuple[bytes, str]:
    """The text exposition of this run's metrics plus `extra` collectors, and its content type."""
    with _render_lock:  # MultiProcessCollector reads files other processes are writing
        return generate_latest(_registry(*extra)), CONTENT_TYPE_LATEST


class PendingWorkCollector(Collector):
    """Gauges read from the database at scrape time (cadence.db.stats: indexed, cheap), at the
    business time `now` of the scrape; ``cadence_database_up`` says whether they could be read."""

    def __init__(self, database_url: str, now: datetime) -> None:
        self.database_url = database_url
        self.now = now

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from cadence.db.stats import read_pending_work

        up = GaugeMetricFamily("cadence_database_up", "1 if the pending-work counts could be read")
        work = read_pending_work(self.database_url, self.now)
        if work is None:
            log.warning("metrics: cannot read pending work")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, value, text in (
            ("cadence_enrollments_due", work.due, "Active enrollments whose next step is due now"),
            ("cadence_deliveries_queued", work.queued, "Deliveries waiting for a worker (first attempt)"),
            ("cadence_deliveries_leased", work.leased, "Deliveries a worker holds right now (state sending)"),
            ("cadence_deliveries_retrying", work.retrying, "Deliveries waiting for another attempt"),
        ):
            yield GaugeMetricFamily(name, text, value=value)
