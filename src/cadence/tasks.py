"""Celery app and tasks: a few lines each; ids in, plain engine functions do the work.

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
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_shutdown

from cadence import engine, logs, metrics
from cadence.config import Settings, get_settings
from cadence.runtime import Runtime

log = logging.getLogger(__name__)


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
    app = Celery("cadence", broker=settings.broker_url, include=["cadence.tasks"])
    if settings.broker_url.startswith("filesystem://"):
        app.conf.broker_transport = "cadence.broker_fs:Transport"
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
                "task": "cadence.tick",
                "schedule": settings.tick_seconds,
                # A tick that waited longer than one interval is stale; the next one does its work.
                "options": {"expires": settings.tick_seconds},
            }
        },
    )
    return app


logs.configure(get_settings().log_format)
app = make_celery(get_settings())


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """One runtime per worker process (its SMTP connection and compiled templates live here)."""
    return Runtime.from_settings(get_settings())


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    if get_settings().log_format == "json":  # CADENCE_LOG_FORMAT; see cadence.logs
        logs.use_json(logger)


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    if runtime.cache_info().currsize:
        runtime().close()


@app.task(name="cadence.tick")
def tick_task() -> int:
    with metrics.timed_tick():
        return engine.tick(runtime(), enqueue=send_batch.delay).enqueued


@app.task(name="cadence.send_batch")
def send_batch(delivery_ids: list[int]) -> int:
    return engine.deliver(runtime(), delivery_ids).sent
