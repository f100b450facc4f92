"""Operations endpoints of ``cadence web``: ``/metrics`` (Prometheus), ``/healthz`` (the process
answers) and ``/readyz`` (it can serve: database at the migration head, broker reachable).

They reveal no subscriber data, but ``/metrics`` tells the size of the list and the send volume:
docs/deploy.md keeps all three off the public side of the reverse proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from cadence import metrics
from cadence.config import Settings
from cadence.db.session import engine_for
from cadence.db.stats import pending_work
from cadence.health import any_failed, check_broker, check_schema
from cadence.web.state import get_state

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


class PendingWorkCollector(Collector):
    """Gauges read from the database at scrape time (cadence.db.stats: indexed, cheap)."""

    def __init__(self, settings: Settings, now: object) -> None:
        self.settings = settings
        self.now = now

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily("cadence_database_up", "1 if the pending-work counts could be read")
        try:
            with engine_for(self.settings.database_url).connect() as conn:
                work = pending_work(conn, self.now)  # type: ignore[arg-type]
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read pending work: %s", type(exc).__name__)
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


@router.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    state = get_state(request)
    body, content_type = metrics.exposition(PendingWorkCollector(state.settings, state.now()))
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers HTTP. Checks nothing else, so a database outage does not get
    every web process restarted (it is a readiness matter)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> Response:
    """Readiness: 200 if the database is at the migration head and the broker answers, else 503
    with the reason of each failed check."""
    settings = get_state(request).settings
    checks = [check_schema(settings), check_broker(settings)]
    body = {
        "status": "not ready" if any_failed(checks) else "ready",
        "checks": {c.name: {"status": c.status, "detail": c.detail, "fix": c.fix} for c in checks},
    }
    return JSONResponse(body, status_code=503 if any_failed(checks) else 200, headers={"Cache-Control": "no-store"})
