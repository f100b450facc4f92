"""``cadence report``, ``cadence audit`` and ``cadence tokens``: the doors to
cadence.operations.results and cadence.operations.staff_access. Registered by ``cadence.cli``;
also registers the subscriber tools (cadence.cli.subscriber_tools)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cadence.cli import subscriber_tools
from cadence.cli.subscriber_tools import actor
from cadence.errors import InputError, NotFound, UsageError

if TYPE_CHECKING:
    from cadence.operations.results import ResultRow

console = Console(highlight=False)
tokens_app = typer.Typer(help="Keys for the staff API (scripts and other tools).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    subscriber_tools.register(app)
    app.command("report")(report)
    app.command("audit")(audit)
    app.add_typer(tokens_app, name="tokens")


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


_WIDE = 185  # the whole report in one table needs about this many columns
_Cell: TypeAlias = "tuple[str, Callable[[ResultRow], str]]"
_SENDING: tuple[_Cell, ...] = (
    ("sent", lambda r: f"{r.sent:,}"),
    ("delivered", lambda r: f"{r.delivered:,}"),
    ("failed", lambda r: f"{r.failed:,}"),
    ("bounced hard/soft", lambda r: f"{r.hard_bounces:,}/{r.soft_bounces:,}"),
    ("complaints", lambda r: f"{r.complaints:,}"),
)
_ENGAGEMENT: tuple[_Cell, ...] = (
    ("opens", lambda r: f"{r.unique_opens:,}"),
    ("open rate*", lambda r: _pct(r.open_rate)),
    ("clicks", lambda r: f"{r.unique_clicks:,}"),
    ("click rate", lambda r: _pct(r.click_rate)),
    ("unsubscribed", lambda r: f"{r.unsubscribes:,}"),
)
# A drip's conversions: people who reached its exit goal with this email as their last one.
_GOAL: tuple[_Cell, ...] = (
    ("exit goal reached", lambda r: f"{r.exit_goal_reached:,}"),
    ("goal rate", lambda r: _pct(r.goal_rate)),
)


def _print_results(title: str, rows: list[ResultRow], cells: tuple[_Cell, ...], *, split: bool) -> None:
    table = Table(title=title)
    table.add_column("email / segment" if split else "email", no_wrap=True)
    if not split:
        table.add_column("segment")
    for header, _ in cells:
        table.add_column(header, justify="right")
    for row in rows:
        email = f"{row.step}. {row.step_id}" if row.step else row.step_id
        segment = row.segment_label or row.segment
        if split and not row.segment:  # "not sent: 1 waiting, 2 skipped", one part a line at 80 columns
            segment = segment.replace(": ", ":\n  ").replace(", ", ",\n  ")
        names = [f"{email}\n  {segment}"] if split else [email, segment]
        last = len(rows) > 1 and row is rows[-2]  # a line above the totals
        table.add_row(*names, *(value(row) for _, value in cells), end_section=last)
    console.print(table)


def report(
    campaign: Annotated[
        str | None,
        typer.Argument(
            help="The campaign's or newsletter's name, e.g. lower-back-pain or clinic-news-2027-01 (leave it out "
            "for the list)",
            show_default=False,
        ),
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="From this day, YYYY-MM-DD (UTC)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Up to and including this day, YYYY-MM-DD")] = None,
    reasons: Annotated[bool, typer.Option("--reasons", help="Also why emails failed (slower on a big list)")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (with the day-by-day numbers)")
    ] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print a spreadsheet (CSV): one line per email and segment, or per day")
    ] = False,
    daily: Annotated[
        bool, typer.Option("--daily", help="Day by day: emails sent, opens, clicks, unsubscribes and bounces")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="With --csv: save the spreadsheet in this file instead of printing it")
    ] = None,
) -> None:
    """Results per email and segment (for a newsletter: per segment): sent, delivered, failed,
    opens, clicks, unsubscribes, bounces, complaints and the people who reached the exit goal
    (a booking), with rates, and the most clicked links. --daily adds the numbers day by day;
    --csv writes them for spreadsheets."""
    from functools import partial

    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.errors import CampaignError
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.results import campaign_results, catch_up, parse_day

    if campaign is None:
        raise UsageError(_choose_one(get_settings()))
    if as_json and as_csv:
        raise UsageError("choose --json or --csv, not both")
    if out is not None and not as_csv:
        raise UsageError("--out saves the spreadsheet: add --csv")
    settings = get_settings()
    first, last = parse_day(since, "--since"), parse_day(until, "--until")
    try:
        definition = CampaignCatalog(settings.campaigns_dir, settings.templates_dir).get(campaign)
    except (NotFound, CampaignError):
        definition = None  # the file is gone or broken: report what the ledger holds
    folded = catch_up(partial(transaction, settings.database_url))
    with transaction(settings.database_url) as session:
        result = campaign_results(
            session,
            campaign,
            definition,
            settings.clock().now(),
            since=first,
            until=last,
            folded=folded,
            reasons=reasons,
            daily=daily or as_json,
        )
    if as_csv:
        _write_csv(result, out, daily=daily)
        return
    if as_json:
        typer.echo(json.dumps(result.document(), indent=2))
        return
    period = f" from {result.since or 'the start'} to {result.until or 'now'}" if (since or until) else ""
    title = f"{escape(result.name)} ({result.campaign}){period}"
    rows = [*result.rows, result.total]
    engagement = _ENGAGEMENT + (_GOAL if result.kind == "drip" else ())
    if console.width >= _WIDE:
        _print_results(title, rows, _SENDING + engagement, split=False)
    else:
        # Twelve columns squeezed into 80 were cut to "ema…", "seg…" (issue 13 trial): on a
        # terminal narrower than the whole table, sending and engagement are two tables, and
        # each row names its email and, below it, its segment.
        _print_results(f"{title}: sending", rows, _SENDING, split=True)
        _print_results(f"{title}: opens, clicks, unsubscribes", rows, _ENGAGEMENT, split=True)
        if result.kind == "drip":
            _print_results(f"{title}: exit goal reached", rows, _GOAL, split=True)
    console.print(f"* {result.opens_caveat}")
    if result.exit_goal:
        console.print(
            f"Exit goal: {result.exit_goal}. Counted at the last email each person had received when they reached "
            "it; the rate is of the people sent that email (the total's: of those sent the first).",
            markup=False,
        )
    if result.top_links:
        links = Table(title="Most clicked links (unique clicks)")
        links.add_column("link")
        links.add_column("clicks", justify="right")
        for url, n in result.top_links:
            links.add_row(escape(url), f"{n:,}")
        console.print(links)
    if result.failures:
        failures = Table(title="Why emails failed")
        for column in ("email", "reason", "count"):
            failures.add_column(column)
        for step, reason, n in result.failures:
            failures.add_row(str(step), escape(reason), f"{n:,}")
        console.print(failures)
    if result.daily is not None:
        days = Table(title="Day by day (UTC)")
        for i, column in enumerate(("day", "sent", "opens*", "clicks", "unsubscribed", "bounced")):
            days.add_column(column, justify="left" if i == 0 else "right")
        for d in result.daily:
            days.add_row(d.day, f"{d.sent:,}", f"{d.opens:,}", f"{d.clicks:,}", f"{d.unsubscribes:,}", f"{d.bounces:,}")
        if not result.daily:
            days.add_row("(nothing yet)", "", "", "", "", "")
        console.print(days)


def _choose_one(settings: Any) -> str:
    """`cadence report` without a name: what there is to report on, in one line (exit 2)."""
    from cadence.files.campaigns import list_campaigns
    from cadence.files.newsletters import list_newsletters

    drips = ", ".join(path.stem for path in list_campaigns(settings.campaigns_dir)) or "none"
    letters = ", ".join(path.stem for path in list_newsletters(settings.campaigns_dir)) or "none"
    return f"give the name of a campaign ({drips}) or of a newsletter ({letters}), e.g. cadence report NAME"


def _write_csv(result: Any, out: Path | None, *, daily: bool) -> None:
    from cadence.operations.results import write_csv

    text = io.StringIO()
    rows = write_csv(result, text, daily=daily)
    if out is None:
        typer.echo(text.getvalue(), nl=False)
        return
    try:  # written whole or not at all: the report is built in memory first (it is small)
        out.write_text(text.getvalue(), encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"{rows} line(s) saved in {out}", markup=False)


def audit(
    limit: Annotated[int, typer.Option("--limit", help="How many entries, newest first (1 to 1000)")] = 50,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Only entries about this, e.g. subscriber:12, token:zapier, or an email address"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON")] = False,
) -> None:
    """Who did what, and when: every staff action from the command line or the staff API."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_access import audit_entries
    from cadence.operations.subscriber_tools import find

    settings = get_settings()
    with transaction(settings.database_url) as session:
        if target is not None and "@" in target and ":" not in target:
            target = f"subscriber:{find(session, target).id}"  # the log names people by id
        entries = audit_entries(session, limit=limit, target=target)
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in entries], indent=2, ensure_ascii=False))
        return
    # One entry per line, details below it: a five-column table cut every cell to "subscriber.e…"
    # and printed Python dicts at 80 columns (issue 13 trial).
    console.print(f"[bold]Audit log[/bold], newest first ({len(entries)} entries)")
    for e in entries:
        console.print(f"{_when(e.at)}  {escape(e.actor)}  [bold]{e.action}[/bold]  {escape(e.target)}", soft_wrap=True)
        if detail := _detail(e.detail):
            console.print(f"    {escape(detail)}", soft_wrap=True)


def _when(at: str) -> str:
    from datetime import datetime

    try:
        return f"{datetime.fromisoformat(at):%Y-%m-%d %H:%M %Z}".strip()
    except ValueError:
        return at


def _detail(detail: dict[str, Any], prefix: str = "") -> str:
    """``key=value`` pairs, nested ones as ``filter.status=active``; empty values left out."""
    parts: list[str] = []
    for key, value in detail.items():
        if value is None or value == [] or value == {} or value == "":
            continue
        if isinstance(value, dict):
            if nested := _detail(value, f"{prefix}{key}."):
                parts.append(nested)
        elif isinstance(value, list):
            parts.append(f"{prefix}{key}={','.join(str(v) for v in value)}")
        else:
            parts.append(f"{prefix}{key}={value}")
    return ", ".join(parts)


@tokens_app.command("add")
def tokens_add(
    name: Annotated[str, typer.Argument(help="A name for who uses it, e.g. zapier or reporting-script")],
    scope: Annotated[
        str, typer.Option("--scope", help="read (look only), write (also suppress and tag) or admin (also erase)")
    ] = "read",
    as_json: Annotated[bool, typer.Option("--json", help="Print the token as JSON")] = False,
) -> None:
    """Make an API key. It is shown once: copy it now; Cadence keeps only a fingerprint of it."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_access import create_token

    settings = get_settings()
    with transaction(settings.database_url) as session:
        token, info = create_token(session, name, scope, actor=actor(), now=settings.clock().now())
    if as_json:
        typer.echo(json.dumps({"token": token, **asdict(info)}, indent=2))
        return
    console.print(f"API key [bold]{escape(info.name)}[/bold] ({info.scope}). Copy it now, it is not shown again:")
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(as_json: Annotated[bool, typer.Option("--json", help="Print the keys as JSON")] = False) -> None:
    """The API keys, with their scope and when they were last used (never the keys themselves)."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_access import list_tokens

    with transaction(get_settings().database_url) as session:
        tokens = list_tokens(session)
    if as_json:
        typer.echo(json.dumps([asdict(t) for t in tokens], indent=2))
        return
    table = Table(title="API keys")
    for column in ("name", "scope", "made", "by", "last used", "revoked"):
        table.add_column(column, no_wrap=True)
    for t in tokens:
        table.add_row(
            escape(t.name),
            t.scope,
            _when(t.created_at)[:10],  # days, not instants: six columns fit 80 (issue 13 trial)
            escape(t.created_by),
            _when(t.last_used_at or "-")[:10],
            _when(t.revoked_at or "-")[:10],
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Stop an API key from working, at once."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_access import revoke_token

    settings = get_settings()
    with transaction(settings.database_url) as session:
        changed = revoke_token(session, name, actor=actor(), now=settings.clock().now())
    console.print(f"revoked {escape(name)}" if changed else f"{escape(name)} was revoked already")
