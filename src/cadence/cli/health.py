"""``cadence worker-health``: is a worker alive and consuming? For orchestrators' probes.

Registered into the main CLI by ``cadence.cli`` (``register(app)``).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("worker-health")(worker_health)


def worker_health(
    hostname: Annotated[
        str | None,
        typer.Option(help="Only this worker must answer (its node name, e.g. celery@web1; default: any worker)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for answers")] = 5.0,
) -> None:
    """Ping the workers through the broker (Celery remote control). Exit status 0 if the worker
    (or any worker) answered, 1 otherwise, with the reason on stderr."""
    from rich.console import Console

    from cadence.config import get_settings
    from cadence.monitoring.health import check_workers

    check = check_workers(get_settings(), timeout=timeout, hostname=hostname)
    if check.status == "fail":
        message = f"[red]unhealthy:[/red] {check.detail}; {check.fix}"
        Console(stderr=True, soft_wrap=True).print(message, highlight=False)
        sys.exit(1)  # typer.Exit's code is dropped by cadence.cli.main (standalone_mode=False)
    Console(soft_wrap=True).print(f"[green]healthy:[/green] {check.detail}", highlight=False)
