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
    """Serve the staff console (/admin; `cadence users add` makes its first account), sign-up,
    confirmation, unsubscribe, preferences, web view and tracking pages, and the JSON API (/api,
    described at /openapi.json). Settings come from CADENCE_* variables."""
    import uvicorn

    from cadence.config import get_settings
    from cadence.monitoring.logs import uvicorn_log_config
    from cadence.monitoring.metrics import start_process_metrics
    from cadence.web.serving import HeaderDeadlineProtocol

    _default_base_url(host, port)
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


def _default_base_url(host: str, port: int) -> None:
    """Without CADENCE_BASE_URL the links (setup, unsubscribe, web view) and the console's
    same-origin check name http://127.0.0.1:8000; on another --port every console form was
    refused as "expired" (a cold trial). So the address this process serves becomes the
    default; a set CADENCE_BASE_URL (a proxy's public URL) is left alone."""
    import os

    # Only this machine: an address others reach needs CADENCE_SECRET_KEY and a chosen URL.
    local = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "127.0.0.1", "127.0.0.1": "127.0.0.1"}
    local |= {"localhost": "localhost", "::1": "[::1]"}  # IPv6 in a URL: RFC 3986 section 3.2.2
    if os.environ.get("CADENCE_BASE_URL") or host not in local:
        return
    base_url = f"http://{local[host]}:{port}"
    if base_url == "http://127.0.0.1:8000":
        return
    os.environ["CADENCE_BASE_URL"] = base_url  # read by get_settings here and in uvicorn's workers
    typer.echo(f"CADENCE_BASE_URL is not set: using {base_url} for links and the console", err=True)


def main() -> None:
    standalone = typer.Typer(add_completion=False)
    standalone.command()(web)
    standalone()


if __name__ == "__main__":  # pragma: no cover
    main()
