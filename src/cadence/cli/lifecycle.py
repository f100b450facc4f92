"""``cadence campaigns pause | resume | cancel | archive | list | send-test``: staff control of a
running campaign. Each command only translates its arguments into one operation
(:mod:`cadence.operations.lifecycle`, :mod:`cadence.operations.test_sends`)."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from cadence.config import get_settings
from cadence.errors import UsageError

Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts)")]


def register(campaigns_app: typer.Typer) -> None:
    campaigns_app.command("pause")(pause)
    campaigns_app.command("resume")(resume)
    campaigns_app.command("cancel")(cancel)
    campaigns_app.command("archive")(archive)
    from cadence.cli.campaign_list import campaigns_list, send_test

    campaigns_app.command("list")(campaigns_list)
    campaigns_app.command("send-test")(send_test)


def actor() -> str:
    """Who is acting, for the audit log: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "cli:unknown"


def _run(name: str, action: str, as_json: bool) -> None:
    from cadence.operations.lifecycle import change_state

    result = change_state(get_settings(), name, action, actor=actor())
    if as_json:
        typer.echo(json.dumps(result.document(), indent=2))
    else:
        Console(highlight=False).print(result.message, markup=False, soft_wrap=True)


def pause(
    name: Annotated[str, typer.Argument(help="The campaign, as in `cadence campaigns list`")], as_json: Json = False
) -> None:
    """Pause a campaign: no new emails go out within about a second, including emails already
    being sent. Everyone keeps their place in the series; `resume` goes on from there."""
    _run(name, "pause", as_json)


def resume(
    name: Annotated[str, typer.Argument(help="The campaign, as in `cadence campaigns list`")], as_json: Json = False
) -> None:
    """Resume a paused campaign. Nobody gets an email twice and nobody is skipped. Emails that
    fell due during the pause go out in the campaign's send window and at the usual sending
    rate (no sudden burst)."""
    _run(name, "resume", as_json)


def cancel(
    name: Annotated[str, typer.Argument(help="The campaign, as in `cadence campaigns list`")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (needed in scripts)")] = False,
    as_json: Json = False,
) -> None:
    """Cancel a campaign for good: queued emails are never sent (shown as skipped,
    "campaign cancelled") and everyone leaves the series. This cannot be undone: a cancelled
    campaign cannot be resumed."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("cancel cannot be undone: add --yes to confirm (no terminal to ask)")
        if not typer.confirm(f"Cancel {name} for good? Queued emails will never be sent", default=False):
            raise typer.Exit(1)
    _run(name, "cancel", as_json)


def archive(
    name: Annotated[str, typer.Argument(help="The campaign, as in `cadence campaigns list`")], as_json: Json = False
) -> None:
    """Archive a cancelled or finished campaign: it no longer shows in `cadence campaigns list`
    (see it with --all). A campaign with people still in it must be cancelled first."""
    _run(name, "archive", as_json)
