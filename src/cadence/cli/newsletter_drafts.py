"""``cadence newsletters drafts ...``: the newsletters stored in the database (written through the
staff API or the console), from the command line: list, show, history, save, delete.

Each command is one call of :mod:`cadence.operations.newsletter_drafts`. A stored newsletter is
then checked, scheduled, paused, tested and followed with the usual ``cadence newsletters ...``
commands, by its name, as a file newsletter is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cadence.config import get_settings
from cadence.errors import InputError, NotFound

drafts_app = typer.Typer(
    help="Newsletters stored in the database (written in the console or through the API).", no_args_is_help=True
)

Name = Annotated[str, typer.Argument(help="The stored newsletter's name")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON (for scripts)")]


def _actor() -> str:
    from cadence.cli.newsletters import _actor as actor

    return actor()


def _now() -> Any:
    return get_settings().clock().now()


@drafts_app.command("list")
def list_drafts(as_json: AsJson = False) -> None:
    """Every stored newsletter with its version and state."""
    from cadence.operations import newsletter_drafts

    found = newsletter_drafts.list_drafts(get_settings())
    if as_json:
        typer.echo(json.dumps([d.document() for d in found], indent=2))
        return
    table = Table(title="Stored newsletters")
    for column in ("Name", "Version", "State", "Subject", "Saved by", "Ready to schedule"):
        table.add_column(column)
    for d in found:
        ready = "yes" if not d.missing else "no: " + ", ".join(p.field for p in d.missing)
        subject = str(d.fields.get("subject", ""))
        table.add_row(d.id, str(d.version), d.state, escape(subject), escape(d.updated_by), ready)
    Console().print(table)


@drafts_app.command("show")
def show(name: Name) -> None:
    """The current version as JSON: fields, version, state, what is missing."""
    from cadence.operations import newsletter_drafts

    typer.echo(json.dumps(newsletter_drafts.get(get_settings(), name).document(), indent=2))


@drafts_app.command("history")
def history(name: Name, as_json: AsJson = False) -> None:
    """Every saved version, newest first."""
    from cadence.operations import newsletter_drafts

    versions = newsletter_drafts.history(get_settings(), name)
    if as_json:
        typer.echo(json.dumps([v.document() for v in versions], indent=2))
        return
    for v in versions:
        typer.echo(f"{v.version:>4}  {v.saved_at:%Y-%m-%d %H:%M} UTC  {v.saved_by}  {v.fields.get('subject', '')}")


@drafts_app.command("save")
def save(
    name: Name,
    fields_file: Annotated[Path, typer.Argument(help="A YAML or JSON file of the fields (subject, body, audience...)")],
    version: Annotated[
        int | None, typer.Option("--version", help="The version you changed (to update); leave out to create")
    ] = None,
) -> None:
    """Create a stored newsletter from a file of fields, or save a new version of one."""
    from cadence.operations import newsletter_drafts

    try:
        fields = yaml.safe_load(fields_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"{fields_file}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{fields_file}: not valid YAML or JSON: {exc}".splitlines()[0]) from None
    settings, actor, now = get_settings(), _actor(), _now()
    if version is None:
        saved = newsletter_drafts.create(settings, name, fields, actor=actor, now=now)
    else:
        saved = newsletter_drafts.update(settings, name, fields, expected_version=version, actor=actor, now=now)
    missing = "; ".join(str(p) for p in saved.missing)
    Console().print(
        f"[green]Saved[/green] {escape(name)} version {saved.version}"
        + (f" (before scheduling, still needed: {escape(missing)})" if missing else "")
    )


@drafts_app.command("delete")
def delete(
    name: Name,
    version: Annotated[int, typer.Option("--version", help="The version you mean to delete (the current one)")],
) -> None:
    """Delete a stored newsletter that was never scheduled, with its history."""
    from cadence.operations import newsletter_drafts

    newsletter_drafts.delete(get_settings(), name, actor=_actor(), now=_now(), expected_version=version)
    Console().print(f"[green]Deleted[/green] {escape(name)}")
