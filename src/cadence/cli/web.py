"""``cadence web``: serve the subscriber web app with uvicorn.

Registered into the main CLI by ``cadence.cli`` (``register(app)``); also runnable on its own as
``python -m cadence.cli.web --port 8000``.
"""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("web")(web)


def web(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="Processes (more than 1: use Redis for the per-IP limits)")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve sign-up, confirmation, unsubscribe, preferences, web view and tracking pages, and the
    JSON API (/api, described at /openapi.json). Settings come from CADENCE_* variables."""
    import uvicorn

    from cadence.config import get_settings
    from cadence.monitoring.logs import uvicorn_log_config
    from cadence.monitoring.metrics import start_process_metrics
    from cadence.web.serving import HeaderDeadlineProtocol

    settings = get_settings()  # fail now, with the variable's name, rather than in a worker process
    start_process_metrics("web", settings)
    json_logs = {"log_config": uvicorn_log_config(log_level)} if settings.log_format == "json" else {}
    uvicorn.run(
        "cadence.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Off: the app reads X-Forwarded-For itself, believing only CADENCE_TRUSTED_PROXIES
        # (web/security.py client_ip), so rate limits and consent records cannot be fooled.
        proxy_headers=False,
        server_header=False,
        # A deadline on each request's line and headers (slowloris; web/serving.py), and on
        # idle keep-alive connections uvicorn's own 5 s.
        http=HeaderDeadlineProtocol,
        log_level=log_level,
        **json_logs,  # type: ignore[arg-type]
    )


def main() -> None:
    standalone = typer.Typer(add_completion=False)
    standalone.command()(web)
    standalone()


if __name__ == "__main__":  # pragma: no cover
    main()
