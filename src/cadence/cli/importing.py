"""``cadence subscribers import FILE``: the door to cadence.operations.subscriber_import, with a progress
bar on a terminal (rows/s, time left; nothing when the output is a file or a pipe) and a summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from cadence.errors import InputError

if TYPE_CHECKING:
    from cadence.config import Settings
    from cadence.operations.import_findings import ImportFindings
    from cadence.operations.subscriber_import import ImportReport


def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV: an email column, optional first name and time zone, attributes")],
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Load the valid rows and write the bad ones to the error report"),
    ] = False,
    errors: Annotated[
        Path | None,
        typer.Option(
            "--errors",
            help="Write every bad row here, with the reason in a last 'error' column: fix them there and import "
            "that file again. With --skip-invalid: FILE.errors.csv",
        ),
    ] = None,
    campaign: Annotated[
        list[str] | None,
        typer.Option("--campaign", help="Check the columns against this campaign's segments (default: every campaign)"),
    ] = None,
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic",
            help="Put everyone in the file on this newsletter topic, e.g. clinic-news (only people who agreed to "
            "receive it; recorded as consent given at import)",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the summary as JSON for a script (no progress bar)"),
    ] = False,
) -> None:
    """Import or update subscribers from a CSV file. All or nothing unless --skip-invalid.

    Headers are matched loosely (Email Address, E-mail, First Name, Time zone...); every other
    column becomes an attribute. The delimiter (, ; or tab) is detected, a BOM is fine. Existing
    subscribers are updated, never resubscribed; suppressed addresses are skipped and named.
    The summary says which columns the campaigns' segments read, and warns about columns they
    do not (a column named differently from what a segment expects puts everyone in the
    fallback segment). --json prints the same summary as data, also when nothing was imported
    (then with exit status 1).
    """
    from cadence.cli.subscriber_tools import actor
    from cadence.config import get_settings
    from cadence.core.suppression_keys import SuppressionKeys
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.drip import import_subscribers as import_csv
    from cadence.operations.exit_goals import goal_campaigns
    from cadence.operations.subscriber_import import ImportRejected

    settings = get_settings()
    if errors is None and skip_invalid:
        errors = file.with_name(file.name.removesuffix(".csv") + ".errors.csv")
    console = Console()
    started = time.monotonic()
    total = file.stat().st_size if file.is_file() else None
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
        TimeRemainingColumn(),
        console=console,
        disable=as_json or not console.is_terminal,
        transient=True,
    ) as progress:
        bar = progress.add_task("import", total=total, rows=0, rate=0.0)

        def show(rows: int, bytes_read: int) -> None:
            rate = rows / max(time.monotonic() - started, 1e-6)
            progress.update(bar, completed=bytes_read, rows=rows, rate=rate)

        try:
            report = import_csv(
                settings.database_url,
                file,
                settings.clock().now(),
                keys=SuppressionKeys.from_settings(settings),  # erased addresses are refused too
                skip_invalid=skip_invalid,
                error_report=errors,
                on_progress=show,
                topics=topic or (),
                sender_file=settings.sender_file,
                actor=actor(),
                goals=goal_campaigns(CampaignCatalog(settings.campaigns_dir, settings.templates_dir)),
            )
        except ImportRejected as rejected:
            if as_json:
                typer.echo(
                    json.dumps(_document(rejected.report, time.monotonic() - started, settings, campaign), indent=2)
                )
                last = str(rejected).splitlines()[-1]  # "N of M rows have problems: nothing was imported..."
                raise ImportRejectedLine(last) from None
            _summary(console, rejected.report, time.monotonic() - started)
            _findings(console, rejected.report, settings, campaign)
            raise
    if as_json:
        typer.echo(json.dumps(_document(report, time.monotonic() - started, settings, campaign), indent=2))
        return
    _summary(console, report, time.monotonic() - started)
    _findings(console, report, settings, campaign)


class ImportRejectedLine(InputError):
    """With --json the problems are in the document; stderr gets the one-line verdict."""


def _document(
    report: ImportReport, seconds: float, settings: Settings, campaign_names: list[str] | None
) -> dict[str, Any]:
    """The summary as data: counts, the first problems (line, field, reason), and what the
    campaigns' segment rules make of the columns and values (the same checks as the text)."""
    document: dict[str, Any] = {
        "file": report.source,
        "imported": report.committed,
        "rows": report.rows,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "suppressed": report.suppressed,
        "suppressed_addresses": list(report.suppressed_addresses),
        "rejected": report.rejected,
        "problem_count": report.problem_count,
        "problems": [{"line": p.line, "field": p.field, "reason": p.reason} for p in report.problems],
        "error_report": str(report.error_report) if report.error_report else None,
        "tags_added": report.tags_added,
        "goals_reached": report.goals_reached,
        "topics": list(report.topics),
        "topics_joined": report.topics_joined,
        "seconds": round(seconds, 3),
        "rows_per_second": round(report.rows / seconds) if seconds > 0 else None,
        "columns": [],
        "unmatched_values": [],
        "warning": None,
    }
    document.update(_checked(report, settings, campaign_names).document())
    return document


def _checked(report: ImportReport, settings: Settings, names: list[str] | None) -> ImportFindings:
    from cadence.operations.import_findings import import_findings

    return import_findings(
        report.header,
        report.values,
        campaigns_dir=settings.campaigns_dir,
        templates_dir=settings.templates_dir,
        campaign_names=names or (),
    )


def _findings(console: Console, report: ImportReport, settings: Settings, names: list[str] | None) -> None:
    """Which columns the campaigns' segment rules read (cadence.operations.import_findings, the
    console's sentences too)."""
    for finding in _checked(report, settings, names).messages:
        prefix = "[yellow]warning:[/yellow] " if finding.level == "warning" else ""
        console.print(prefix + escape(finding.text), soft_wrap=True)


def _summary(console: Console, report: ImportReport, seconds: float) -> None:
    rate = report.rows / seconds if seconds > 0 else 0.0
    rows = f"{report.rows:,} row" + ("" if report.rows == 1 else "s")
    console.print(f"{escape(report.source)}: {rows} read in {seconds:.1f} s ({rate:,.0f} rows/s)")
    if not report.committed:
        console.print("[red]nothing was imported[/red]" + _report_note(report))
        return
    suppressed = ""
    if report.suppressed_addresses:
        names = ", ".join(report.suppressed_addresses)
        more = report.suppressed - len(report.suppressed_addresses)
        suppressed = f" ({names}{f' and {more:,} more' if more > 0 else ''})"
    console.print(
        f"[green]{report.created:,} created[/green], {report.updated:,} updated, {report.unchanged:,} unchanged, "
        f"{report.suppressed:,} skipped as suppressed{escape(suppressed)}, {report.rejected:,} rejected"
        + (f", {report.tags_added:,} tag(s) added" if report.tags_added else "")
        + (f", {report.goals_reached:,} drip(s) ended: exit goal reached" if report.goals_reached else "")
        + (f", {report.topics_joined:,} joined {', '.join(report.topics)}" if report.topics else "")
        + _report_note(report),
        soft_wrap=True,
    )


def _report_note(report: ImportReport) -> str:
    if report.error_report is None:
        return ""
    return f"; error report: {escape(str(report.error_report))}"
