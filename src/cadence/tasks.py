"""Celery app and tasks: a few lines each; ids in, the operations (operations/drip.py) do the work.

The app is built by :func:`make_celery` from a settings object, never at import;
:func:`process_app` is the one of this process (``cadence worker``, ``celery -A cadence.tasks``).

Worker settings and why (Celery docs, "Optimizing" and "Redis caveats"):
- ``task_acks_late``: a task is acknowledged after it ran, so a worker killed mid-batch leaves
  it in the broker for another worker; the ledger makes the second run harmless.
- ``worker_prefetch_multiplier = 1``: a send task carries a whole batch; prefetching more would
  park batches behind a busy process while another sits idle.
- ``visibility_timeout`` above the longest batch: Redis redelivers unacknowledged tasks after
  it, so it must exceed a batch's run time (and we never use long countdown/eta: time lives in
  the database, celery/celery#7918, kombu#337).
- No result backend: results are rows in our database.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache, partial
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_shutdown, worker_shutdown

from cadence.config import Settings, get_settings
from cadence.monitoring import logs, metrics
from cadence.operations import drip, import_jobs
from cadence.operations.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = [
    "IMPORT_JOB",
    "SEND_BATCH",
    "TICK",
    "enqueue_import",
    "enqueue_send",
    "make_celery",
    "process_app",
    "runtime",
]

TICK = "cadence.tick"
SEND_BATCH = "cadence.send_batch"
IMPORT_JOB = "cadence.import_job"


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_url.startswith("filesystem://"):
        folder = settings.data_dir / "broker"
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "control_folder": str(folder / "control"),
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    if settings.uses_redis_broker:
        return {"visibility_timeout": max(3600, int(settings.lease_seconds * 2))}
    return {}


def make_celery(settings: Settings) -> Celery:
    """The Celery app for `settings`, with Cadence's tasks registered on it. Built by a function,
    not at import (issue 12): the doctor pings workers with an app of its own, the bench and the
    tests build one for the settings they chose, and importing this module reads nothing."""
    app = Celery("cadence", broker=settings.broker_url)
    if settings.broker_url.startswith("filesystem://"):
        app.conf.broker_transport = "cadence.worker.broker_fs:Transport"
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        beat_schedule={
            "cadence-tick": {
                "task": TICK,
                "schedule": settings.tick_seconds,
                # A tick that waited longer than one interval is stale; the next one does its work.
                "options": {"expires": settings.tick_seconds},
            }
        },
    )
    _register_tasks(app)
    return app


def _register_tasks(app: Celery) -> None:
    @app.task(name=TICK, shared=False)  # this app only: its tick enqueues through it
    def tick() -> int:
        with metrics.timed_tick():
            return drip.tick(runtime(), enqueue=partial(enqueue_send, app)).enqueued

    @app.task(name=SEND_BATCH, shared=False)
    def send_batch(delivery_ids: list[int]) -> int:
        return drip.deliver(runtime(), delivery_ids).sent

    @app.task(name=IMPORT_JOB, shared=False, bind=True)
    def import_job(self: Any, job_id: int) -> str:
        # A console upload (operations/import_jobs.py): one thread of the worker for the file's
        # length, its progress in the job row. Delivered twice, it runs once (claim_job).
        current = runtime()
        return import_jobs.run_import_job(
            current.settings, current.clock, job_id, runner=f"worker {self.request.hostname or '?'}"
        )


def enqueue_send(app: Celery, delivery_ids: list[int]) -> None:
    """Queue one send task for `delivery_ids` (committed ledger rows: the tick calls this after
    its transaction)."""
    app.send_task(SEND_BATCH, args=[delivery_ids])


def enqueue_import(app: Celery, job_id: int) -> None:
    """Queue the import task of a committed job row (the console calls this after its commit)."""
    app.send_task(IMPORT_JOB, args=[job_id])


@lru_cache(maxsize=1)
def process_app() -> Celery:
    """This process's app, from the process settings (``config.get_settings``): the one
    ``cadence worker``, ``cadence scheduler`` and ``cadence tick`` run, and ``celery -A
    cadence.tasks`` finds as ``app``. Built on first use, with the log format applied first."""
    settings = get_settings()
    logs.configure(settings.log_format)
    return make_celery(settings)


def __getattr__(name: str) -> Any:
    # ``celery -A cadence.tasks`` looks for a module attribute ``app`` (celery.app.utils.find_app):
    # built on that first access (PEP 562) rather than when the module is imported.
    if name == "app":
        return process_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_local = threading.local()
_runtimes: list[Runtime] = []  # every thread's, closed when the worker stops
_runtimes_lock = threading.Lock()


def runtime() -> Runtime:
    """The runtime of this thread of the worker process (its SMTP connection and compiled
    templates live here). One per thread, because a transport is not thread-safe: the solo and
    prefork pools send from one thread per process, the threads pool (``--pool threads``) from
    several, each with its own connection (issue 15)."""
    current: Runtime | None = getattr(_local, "runtime", None)
    if current is None:
        current = _local.runtime = Runtime.from_settings(get_settings())
        with _runtimes_lock:
            _runtimes.append(current)
    return current


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    if get_settings().log_format == "json":  # CADENCE_LOG_FORMAT; see cadence.monitoring.logs
        logs.use_json(logger)


@worker_process_shutdown.connect  # a prefork pool process ends
@worker_shutdown.connect  # the solo pool: the worker process itself sends
def _close_runtime(**_: Any) -> None:
    with _runtimes_lock:
        for each in _runtimes:
            each.close()
        _runtimes.clear()
