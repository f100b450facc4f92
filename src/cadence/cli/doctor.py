"""``cadence doctor``: check the configuration and the world around it (cadence.monitoring.doctor).

Registered into the main CLI by ``cadence.cli`` (``register(app)``).
"""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor() -> None:
    """Check settings, database, broker, SMTP relay, DKIM, SPF, DMARC and unsubscribe links. Each
    check prints pass / warn / fail and, when not passing, the fix. Exit status 1 if any failed."""
    from rich.console import Console
    from rich.markup import escape

    from cadence.config import get_settings
    from cadence.monitoring.doctor import run_checks

    console = Console(soft_wrap=True, highlight=False)
    checks = run_checks(get_settings())
    style = {"pass": "green", "warn": "yellow", "fail": "red"}
    for check in checks:
        line = f"[{style[check.status]}]{check.status.upper():4}[/] {escape(check.name)}: {escape(check.detail)}"
        if check.fix and check.status != "pass":
            line += f"\n     fix: {escape(check.fix)}"
        console.print(line)
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    console.print(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    if failed:
        sys.exit(1)
