"""``cadence report``, ``cadence audit`` and ``cadence tokens``: the doors to
cadence.operations.results and cadence.operations.staff_access. Registered by ``cadence.cli``;
also registers the subscriber tools (cadence.cli.subscriber_tools)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cadence.cli import subscriber_tools
from cadence.cli.subscriber_tools import actor
from cadence.errors import NotFound

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


_CSV_COLUMNS = (
    "email", "segment", "sent", "delivered", "failed", "bounced_hard", "bounced_soft", "complaints",
    "unique_opens", "unique_clicks", "open_rate", "click_rate", "unsubscribed",
)  # fmt: skip
_WIDE = 150  # the whole report in one table needs about this many columns
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


def _print_results(title: str, rows: list[ResultRow], cells: tuple[_Cell, ...], *, split: bool) -> None:
    table = Table(title=title)
    table.add_column("email / segment" if split else "email", no_wrap=True)
    if not split:
        table.add_column("segment")
    for header, _ in cells:
        table.add_column(header, justify="right")
    for row in rows:
        email = f"{row.step}. {row.step_id}" if row.step else row.step_id
        segment = row.segment or "(none yet)"
        names = [f"{email}\n  {segment}"] if split else [email, segment]
        last = len(rows) > 1 and row is rows[-2]  # a line above the totals
        table.add_row(*names, *(value(row) for _, value in cells), end_section=last)
    console.print(table)


def report(
    campaign: Annotated[str, typer.Argument(help="The campaign's name, e.g. lower-back-pain")],
    since: Annotated[str | None, typer.Option("--since", help="From this day, YYYY-MM-DD (UTC)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Up to and including this day, YYYY-MM-DD")] = None,
    reasons: Annotated[bool, typer.Option("--reasons", help="Also why emails failed (slower on a big list)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV, for a spreadsheet")] = False,
) -> None:
    """Results per email and segment: sent, delivered, failed, opens, clicks, unsubscribes,
    bounces and complaints, with rates, and the most clicked links."""
    from functools import partial

    from cadence.catalog import CampaignCatalog
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.errors import CampaignError
    from cadence.operations.results import campaign_results, catch_up, parse_day

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
        )
    if as_json:
        typer.echo(json.dumps(result.document(), indent=2))
        return
    if as_csv:  # what a Mailchimp user downloads to a spreadsheet (issue 13): plain numbers
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(_CSV_COLUMNS)
        for row in [*result.rows, result.total]:
            email = f"{row.step}. {row.step_id}" if row.step else row.step_id
            rates = ("" if rate is None else f"{rate:.4f}" for rate in (row.open_rate, row.click_rate))
            counts = (row.sent, row.delivered, row.failed, row.hard_bounces, row.soft_bounces, row.complaints)
            out.writerow([email, row.segment or "(none yet)", *counts, row.unique_opens, row.unique_clicks, *rates,
                          row.unsubscribes])  # fmt: skip
        return
    period = f" from {result.since or 'the start'} to {result.until or 'now'}" if (since or until) else ""
    title = f"{escape(result.name)} ({result.campaign}){period}"
    rows = [*result.rows, result.total]
    if console.width >= _WIDE:
        _print_results(title, rows, _SENDING + _ENGAGEMENT, split=False)
    else:
        # Twelve columns squeezed into 80 were cut to "ema…", "seg…" (issue 13 trial): on a
        # terminal narrower than the whole table, sending and engagement are two tables, and
        # each row names its email and, below it, its segment.
        _print_results(f"{title}: sending", rows, _SENDING, split=True)
        _print_results(f"{title}: opens, clicks, unsubscribes", rows, _ENGAGEMENT, split=True)
    console.print(f"* {result.opens_caveat}")
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
