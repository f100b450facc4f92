"""Operations endpoints of ``cadence web``: ``/metrics`` (Prometheus), ``/healthz`` (the process
answers) and ``/readyz`` (it can serve: database at the migration head, broker reachable).

They reveal no subscriber data, but ``/metrics`` tells the size of the list and the send volume:
docs/deploy.md keeps all three off the public side of the reverse proxy.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from cadence.monitoring import metrics
from cadence.monitoring.health import any_failed, check_broker, check_schema
from cadence.web.state import get_state

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    state = get_state(request)
    body, content_type = metrics.exposition(metrics.PendingWorkCollector(state.settings.database_url, state.now()))
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
