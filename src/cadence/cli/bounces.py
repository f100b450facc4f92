"""``cadence bounces process [DIR] [--imap]``: read bounce mail, apply it, print a summary.

DIR is a maildir or a folder of ``.eml`` files; processed messages move to ``DIR/processed``.
``--imap`` also reads the UNSEEN messages of ``CADENCE_BOUNCE_IMAP_URL``
(``imaps://user:password@host/INBOX``) and flags them seen. Safe to run again, or from cron:
every bounce is applied once (cadence.operations.bounce_events).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cadence.config import get_settings
from cadence.errors import ConfigError, UsageError
from cadence.inbound.bounce_mailbox import (
    IMAP_URL_VARIABLE,
    BounceRunResult,
    record_bounce_folder,
    record_bounce_mailbox,
)

console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``bounces`` command group to the main CLI."""
    bounces_app = typer.Typer(help="Bounce mail: hard and soft bounces, auto-replies.", no_args_is_help=True)
    bounces_app.command("process")(process)
    app.add_typer(bounces_app, name="bounces")


def process(
    directory: Annotated[
        Path | None, typer.Argument(metavar="DIR", help="A maildir or a folder of .eml files", show_default=False)
    ] = None,
    imap: Annotated[bool, typer.Option("--imap", help=f"Also read the UNSEEN mail of {IMAP_URL_VARIABLE}")] = False,
) -> None:
    """Apply every bounce in DIR (and the IMAP mailbox with --imap) once; print what happened."""
    if directory is None and not imap:
        raise UsageError("give a DIR to read, --imap, or both")
    settings = get_settings()
    now = settings.clock().now()
    runs: list[tuple[str, BounceRunResult]] = []
    if directory is not None:
        runs.append((str(directory), record_bounce_folder(settings, directory, now)))
    if imap:
        imap_url = settings.bounce_imap_url
        if not imap_url:
            raise ConfigError(f"{IMAP_URL_VARIABLE}: not set (imaps://user:password@host/INBOX)")
        runs.append(("IMAP", record_bounce_mailbox(settings, imap_url, now)))
    console.print(summary_table(runs))
    for source, result in runs:
        for name in result.unrecognised:
            console.print(f"[yellow]not a bounce:[/yellow] {source}: {name}", highlight=False)


def summary_table(runs: list[tuple[str, BounceRunResult]]) -> Table:
    """One row per counter, one column per source: readable in an 80-column terminal."""
    table = Table(title="Bounces processed")
    table.add_column("")
    for source, _ in runs:
        table.add_column(source, justify="right")
    rows: list[tuple[str, Callable[[BounceRunResult], int]]] = [
        ("messages read", lambda r: r.messages),
        ("events applied", lambda r: r.events.applied),
        ("already applied", lambda r: r.events.duplicates),
        ("ignored (auto-replies, delays)", lambda r: r.events.ignored),
        ("addresses suppressed", lambda r: r.events.suppressed),
        ("soft bounces counted", lambda r: r.events.soft_bounces),
        ("unsubscribed", lambda r: r.events.unsubscribed),
        ("unknown addresses", lambda r: r.events.unknown),
        ("not a bounce", lambda r: len(r.unrecognised)),
    ]
    for label, value in rows:
        table.add_row(label, *(str(value(result)) for _, result in runs))
    return table
