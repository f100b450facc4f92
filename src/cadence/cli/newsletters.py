"""``cadence newsletters ...``: one-off emails to the people who asked for them (issue 13).

Each command translates its arguments into one call of :mod:`cadence.operations.newsletters`
and prints the answer; how a command ends (exit status, one-line errors) is cadence.cli.failure's.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cadence.config import get_settings
from cadence.errors import AlreadyDone, CampaignError, UsageError

newsletters_app = typer.Typer(
    help="Write, check, schedule and follow newsletters: one-off emails such as the monthly clinic news.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="The newsletter's name: its file in campaigns/newsletters/, without .yaml")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON (for scripts)")]


def register(app: typer.Typer) -> None:
    from cadence.cli.newsletter_drafts import drafts_app  # stored newsletters (API, console)

    newsletters_app.add_typer(drafts_app, name="drafts")
    app.add_typer(newsletters_app, name="newsletters")


def _console() -> Console:
    return Console()  # per call: Rich reads the terminal width when created


def _actor() -> str:
    """Who did it, for the audit log: the person logged in to this computer."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _now() -> Any:
    return get_settings().clock().now()


def _local(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


@newsletters_app.command("preview")
def preview(
    name: Name,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder to write to (default: <data dir>/preview/<name>)")
    ] = None,
) -> None:
    """Write the newsletter as a web page you can open in a browser, at phone and desktop widths."""
    from cadence.operations import newsletters

    settings = get_settings()
    index = newsletters.preview(settings, name, out or settings.data_dir / "preview" / name, _now())
    _console().print(f"[green]Preview written:[/green] {index}")


@newsletters_app.command("audience")
def audience(name: Name, as_json: AsJson = False) -> None:
    """Count who would receive the newsletter now, per segment. Only confirmed subscribers who did
    not unsubscribe and whose address is not blocked are counted."""
    from cadence.operations import newsletters

    count = newsletters.audience(get_settings(), name, _now())
    if as_json:
        typer.echo(json.dumps(count.document(), indent=2))
        return
    table = Table(title=f"{name}: {count.total} recipient(s), by segment of {count.segments_of}")
    table.add_column("Segment")
    table.add_column("Recipients", justify="right")
    for segment_id, number in count.per_segment.items():
        table.add_row(escape(count.segment_names.get(segment_id, segment_id)), str(number))
    table.add_row("[bold]Total[/bold]", f"[bold]{count.total}[/bold]")
    _console().print(table)
    if count.suppressed:
        _console().print(f"{count.suppressed} more match but their address is blocked (bounced, complained or erased)")


@newsletters_app.command("schedule")
def schedule(
    name: Name,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help='When to send, instead of the file\'s send_at: "2027-01-12 09:00 local" (9 am in each '
            'reader\'s time zone), "2027-01-12T09:00:00-05:00" (one moment for everyone) or "now"',
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Check the newsletter and schedule it: from then on its text is fixed, and each reader gets it
    once, at the send time. Scheduling again before sending starts replaces the text, audience and
    time."""
    from cadence.operations import newsletters

    result = newsletters.schedule(get_settings(), name, at=at, actor=_actor(), now=_now())
    if as_json:
        document = {
            "newsletter": result.newsletter_id,
            "recipients": result.recipients,
            "send_at": result.send_at,
            "first_due": result.first_due.isoformat(),
            "last_due": result.last_due.isoformat(),
            "scheduled_again": result.again,
        }
        typer.echo(json.dumps(document, indent=2))
        return
    when = _local(result.first_due)
    if result.last_due != result.first_due:
        when = f"between {_local(result.first_due)} and {_local(result.last_due)}"
    _console().print(f"[green]Scheduled {result.newsletter_id}[/green] for {result.recipients} reader(s), {when}")
    if result.dropped:
        _console().print(f"{result.dropped} reader(s) scheduled before are no longer in the audience: they get nothing")


def _lifecycle(action: str, name: str, as_json: bool) -> None:
    from cadence.operations import newsletters

    operation = {"pause": newsletters.pause, "resume": newsletters.resume, "cancel": newsletters.cancel}[action]
    try:
        state, copies = operation(get_settings(), name, actor=_actor(), now=_now())
    except AlreadyDone as done:  # nothing changed and nothing is wrong: exit 0, as campaigns pause does
        if as_json:
            typer.echo(json.dumps({"newsletter": name, "changed": False, "copies": 0, "message": str(done)}))
        else:
            _console().print(str(done))
        return
    if as_json:
        typer.echo(json.dumps({"newsletter": name, "state": state, "copies": copies}))
        return
    verb = {"pause": "held", "resume": "queued again", "cancel": "will never be sent"}[action]
    _console().print(f"[green]{name} is {state}[/green]: {copies} unsent email(s) {verb}")


@newsletters_app.command("pause")
def pause(name: Name, as_json: AsJson = False) -> None:
    """Stop sending for now. Nothing is lost: resume sends the rest, each at its own time."""
    _lifecycle("pause", name, as_json)


@newsletters_app.command("resume")
def resume(name: Name, as_json: AsJson = False) -> None:
    """Go on sending a paused newsletter (emails whose time has passed go out at once)."""
    _lifecycle("resume", name, as_json)


@newsletters_app.command("cancel")
def cancel(
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (needed in scripts)")] = False,
    as_json: AsJson = False,
) -> None:
    """Stop for good: emails not yet sent are never sent. Cannot be undone. It asks for
    confirmation, as `cadence campaigns cancel` does; scripts add --yes."""
    if not yes:  # the same guard as campaigns cancel (issue 13 trial: one took --yes, one did not)
        if not sys.stdin.isatty():
            raise UsageError("cancel cannot be undone: add --yes to confirm (no terminal to ask)")
        if not typer.confirm(f"Cancel {name} for good? Unsent emails will never be sent", default=False):
            raise typer.Exit(1)
    _lifecycle("cancel", name, as_json)


@newsletters_app.command("list")
def list_(as_json: AsJson = False) -> None:
    """Every newsletter: drafts (files not scheduled yet) and scheduled, sending or sent ones."""
    from cadence.operations import newsletters

    items = newsletters.list_all(get_settings())
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(title="Newsletters")
    # Lowercase like `campaigns list`; the name is what every other command takes, so it is never
    # cut short ("clinic-news-2…" at 80 columns, issue 13 trial).
    table.add_column("newsletter", no_wrap=True)
    for column in ("state", "subject", "send at"):
        table.add_column(column)
    for column in ("readers", "sent"):
        table.add_column(column, justify="right")
    for item in items:
        table.add_row(
            *(escape(str(item.get(k, ""))) for k in ("id", "state", "subject", "send_at", "recipients", "sent"))
        )
    _console().print(table)


@newsletters_app.command("status")
def status(name: Name, as_json: AsJson = False) -> None:
    """How a newsletter is doing: sent, failed, skipped, queued, opens, clicks, unsubscribes.
    Opens are over-counted: some mail apps load every image, opened or not."""
    from cadence.operations import newsletters

    report = newsletters.status(get_settings(), name)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table(title=f"{name}: {report['state']}")
    table.add_column("")
    table.add_column("", justify="right")
    labels = {
        "recipients": "Readers when scheduled",
        "sent": "Sent",
        "failed": "Failed",
        "skipped": "Skipped (unsubscribed, blocked, cancelled)",
        "queued": "Queued emails, not sent yet",
        "opens": "Opened (people; over-counted)",
        "clicks": "Clicked (people)",
        "unsubscribes": "Unsubscribed from it",
    }
    for key, label in labels.items():
        if key in report:
            table.add_row(label, str(report[key]))
    _console().print(table)


@newsletters_app.command("send-test")
def send_test(
    name: Name,
    to: Annotated[
        list[str],
        typer.Option("--to", help="Where to send it: addresses separated by commas, or --to repeated (up to 10)"),
    ],
    subscriber: Annotated[
        str | None,
        typer.Option("--subscriber", help="Fill it with this subscriber's name and answers instead of a sample's"),
    ] = None,
) -> None:
    """Send the newsletter as it is now to yourself or your team, subject marked [TEST]. It goes
    out the real way but is not counted anywhere, and its links cannot unsubscribe anybody.
    --subscriber shows it as that person would read it."""
    from cadence.operations import newsletters
    from cadence.operations.runtime import Runtime

    # Commas too, as `campaigns send-test --to a,b` takes them (issue 13 trial).
    addresses = [a.strip() for value in to for a in value.split(",") if a.strip()]
    runtime = Runtime.from_settings(get_settings())
    try:
        sent = newsletters.send_test(
            runtime, name, addresses, actor=_actor(), now=_now(), subscriber_email=subscriber
        )
    finally:
        runtime.close()
    data_of = f" with the data of {subscriber}" if subscriber else ""
    _console().print(f"[green]Test sent[/green] to {sent} address(es){escape(data_of)}: {escape(', '.join(addresses))}")


def validate_newsletter(name: str, campaigns_dir: Path, templates_dir: Path) -> None:
    """``cadence campaigns validate`` for a newsletter file: its problems, one per line, exit 1."""
    from dataclasses import replace

    from cadence.operations import newsletters

    settings = replace(get_settings(), campaigns_dir=campaigns_dir, templates_dir=templates_dir)
    loaded, problems = newsletters.validate(settings, name, _now())
    if problems:
        for problem in problems:
            _console().print(str(problem), highlight=False, markup=False, soft_wrap=True)
        raise CampaignError(f"{len(problems)} problem(s) in newsletter {loaded.newsletter.id}")
    _console().print(f"[green]{escape(loaded.newsletter.id)}: newsletter valid[/green] (subject checked, audience set)")
