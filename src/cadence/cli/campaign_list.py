"""``cadence campaigns list`` and ``cadence campaigns send-test``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cadence.config import get_settings


def when(value: datetime | None, tz_name: str = "UTC") -> str:
    """A send time as a marketer reads it: "Tue 8 Dec 12:00 UTC"."""
    if value is None:
        return "–"
    return value.strftime("%a %-d %b %H:%M ") + tz_name


def campaigns_list(
    all_: Annotated[bool, typer.Option("--all", help="Also archived campaigns")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON (for scripts)")] = False,
) -> None:
    """Every campaign with its state (running, paused, cancelled, held), how many people are in
    it, how many wait for their next email and when the next one goes out. Archived campaigns
    are hidden unless --all. Exit status 1 if a campaign is held (its file is missing or broken)."""
    from cadence.operations.campaign_overview import campaign_summaries

    settings = get_settings()
    summaries = campaign_summaries(settings, include_archived=all_)
    if as_json:
        typer.echo(json.dumps([s.document() for s in summaries], indent=2))
    else:
        table = Table(title="Campaigns")
        for column in ("campaign", "state", "in it", "waiting", "next send", "sent"):
            table.add_column(column, justify="right" if column in ("in it", "waiting", "sent") else "left")
        for s in summaries:
            state = f"held: {s.held}" if s.held and s.state == "running" else s.state
            table.add_row(s.id, state, str(s.active), str(s.waiting), when(s.next_send_at), str(s.sent))
        if not summaries:
            table.add_row("(none)", "", "", "", "", "")
        Console().print(table)
        if not summaries and not all_:
            # A cold start in an empty folder showed "(none)" and nothing else (issue 13 trial);
            # with every campaign archived, "No campaign files" was false (cold trial).
            from cadence.files.campaigns import list_campaigns

            archived = len(campaign_summaries(settings, include_archived=True))
            Console(highlight=False).print(
                f"Every campaign is archived ({archived}): `cadence campaigns list --all` shows them"
                if archived and list_campaigns(settings.campaigns_dir)
                else f"No campaign files in {settings.campaigns_dir} (run cadence where your campaigns/ folder is, "
                "or set CADENCE_CAMPAIGNS_DIR)",
                soft_wrap=True,
            )
    if any(s.held for s in summaries):
        raise typer.Exit(1)


def send_test(
    name: Annotated[str, typer.Argument(help="The campaign")],
    step: Annotated[str, typer.Option("--step", help="Which email: its number (1 = the first) or its id")],
    to: Annotated[str, typer.Option("--to", help="Where to send it: addresses separated by commas (at most 20)")],
    segment: Annotated[
        str | None, typer.Option("--segment", help="The version to send: a segment id or name (as validate shows)")
    ] = None,
    subscriber: Annotated[
        str | None,
        typer.Option(
            "--subscriber",
            help="Fill the email with this subscriber's data (their address or id) instead of a sample's; "
            "without --segment, also their segment",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts)")] = False,
) -> None:
    """Send one email of a campaign to yourself or colleagues, to see it in a real inbox. The
    subject starts with [TEST]; links in it never unsubscribe anyone; nothing is counted in the
    campaign's results. At most 20 addresses at a time and 100 test emails per hour in all."""
    from cadence.cli.lifecycle import actor
    from cadence.operations.runtime import Runtime
    from cadence.operations.test_sends import send_campaign_test

    runtime = Runtime.from_settings(get_settings())
    try:
        result = send_campaign_test(
            runtime, name, step=step, segment=segment, to=to, subscriber=subscriber, actor=actor()
        )
    finally:
        runtime.close()
    if as_json:
        typer.echo(json.dumps(result.document(), indent=2))
    else:
        console = Console(highlight=False)
        console.print(
            f"{result.subject!r} ({result.step}, {result.segment}) sent to {len(result.sent)}: "
            + ", ".join(result.sent),
            markup=False,
            soft_wrap=True,
        )
        for address, why in result.refused.items():
            console.print(f"not sent to {address}: {why}", markup=False, soft_wrap=True)
    if result.refused:
        raise typer.Exit(1)
