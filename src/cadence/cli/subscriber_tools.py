"""``cadence subscribers search|show|export|erase|suppress|unsuppress|tag``: the doors to
cadence.operations.subscriber_tools. Registered by ``cadence.cli`` (``register(app)``)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cadence.errors import InputError, NotFound, UsageError
from cadence.operations.work import Session

console = Console(highlight=False)


def register(app: typer.Typer) -> None:
    """Add the commands to the ``subscribers`` group of `app`."""
    group = next(g.typer_instance for g in app.registered_groups if g.name == "subscribers")
    assert group is not None
    for name, command in (
        ("search", search),
        ("show", show),
        ("export", export),
        ("erase", erase_command),
        ("unsubscribe", unsubscribe_command),
        ("suppress", suppress_command),
        ("unsuppress", unsuppress_command),
        ("tag", tag_command),
    ):
        group.command(name)(command)


def actor() -> str:
    from cadence.config import os_user

    return f"cli:{os_user()}"


@contextmanager
def _transaction() -> Iterator[tuple[Session, Any]]:
    from cadence.config import get_settings
    from cadence.db.session import transaction

    settings = get_settings()
    with transaction(settings.database_url) as session:
        yield session, settings


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# --- the search filter shared by search, export and tag -------------------------------------------

Query = Annotated[str | None, typer.Argument(help="Part of an email address or first name (any case)")]
Status = Annotated[
    list[str] | None,
    typer.Option("--status", help="Only this status: pending, active, unsubscribed, bounced, complained (repeatable)"),
]
Tag = Annotated[list[str] | None, typer.Option("--tag", help="Only people with this tag (repeatable: all of them)")]
Segment = Annotated[
    str | None, typer.Option("--segment", help="Only people in this segment of a campaign now, e.g. trail+no-race")
]
Campaign = Annotated[
    str | None, typer.Option("--campaign", help="The campaign --segment belongs to (when there are several)")
]
Attr = Annotated[
    list[str] | None, typer.Option("--attr", help="Only people whose answer is this, key=value (repeatable)")
]


def _filter(
    settings: Any,
    query: str | None,
    status: list[str] | None,
    tag: list[str] | None,
    segment: str | None,
    campaign: str | None,
    attr: list[str] | None,
) -> Any:
    from cadence.cli.options import parse_attrs
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.subscriber_tools import (
        SegmentFilter,
        SubscriberFilter,
        check_statuses,
        check_tag,
    )

    if campaign is not None and segment is None:
        raise UsageError("--campaign goes with --segment")
    chosen = None
    if segment is not None:
        catalog = CampaignCatalog(settings.campaigns_dir, settings.templates_dir)
        if campaign is None:
            everything = catalog.all()
            if len(everything) != 1:
                raise UsageError("--segment: say which campaign with --campaign NAME")
            found = everything[0]
        else:
            found = catalog.get(campaign)
        found.segment(segment)  # NotFound names the segment
        chosen = SegmentFilter(found, segment)
    return SubscriberFilter(
        text=query or None,
        statuses=check_statuses(status or []),
        tags=tuple(check_tag(t, "--tag") for t in tag or []),
        segment=chosen,
        attrs=tuple(parse_attrs(attr or []).items()),
    )


def search(
    query: Query = None,
    status: Status = None,
    tag: Tag = None,
    segment: Segment = None,
    campaign: Campaign = None,
    attr: Attr = None,
    limit: Annotated[int, typer.Option("--limit", help="How many to show (1 to 500)")] = 50,
    after: Annotated[
        int | None, typer.Option("--after", help="The next page: the number the last page ended with")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Find subscribers by part of their address or name, status, tag, segment or answer."""
    from cadence.operations.subscriber_tools import search_subscribers

    with _transaction() as (session, settings):
        wanted = _filter(settings, query, status, tag, segment, campaign, attr)
        page = search_subscribers(session, wanted, settings.clock().now().date(), limit=limit, after=after)
    if as_json:
        _print_json(asdict(page))
        return
    table = Table(title=f"{len(page.subscribers)} subscriber(s)")
    for column in ("email", "name", "status", "tags", "since"):
        table.add_column(column)
    for s in page.subscribers:
        table.add_row(escape(s.email), escape(s.first_name), s.status, ", ".join(s.tags), s.created_at[:10])
    console.print(table)
    if page.next_after is not None:
        console.print(f"more: add --after {page.next_after} for the next page")


def show(
    email: Annotated[str, typer.Argument(help="The subscriber's email address")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON")] = False,
) -> None:
    """Everything about one subscriber: status, answers, topics, tags, courses, and every
    email and event (sent, opened, clicked, bounced, unsubscribed, paused, resumed, answers
    changed) with its time."""
    from cadence.core.campaign import Campaign as CampaignModel
    from cadence.core.suppression_keys import SuppressionKeys
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.subscriber_tools import subscriber_profile

    with _transaction() as (session, settings):
        catalog = CampaignCatalog(settings.campaigns_dir, settings.templates_dir)

        def campaign_named(name: str) -> CampaignModel | None:
            try:
                return catalog.get(name)
            except (NotFound, InputError):
                return None

        profile = subscriber_profile(
            session,
            email,
            keys=SuppressionKeys.from_settings(settings),
            campaign_named=campaign_named,
            actor=actor(),
            now=settings.clock().now(),
        )
    if as_json:
        _print_json(asdict(profile))
        return
    console.print(f"[bold]{escape(profile.email)}[/bold] {escape(profile.first_name)} (id {profile.id})")
    console.print(f"status: {profile.status}" + (f", suppressed ({profile.suppressed})" if profile.suppressed else ""))
    joined = f"joined: {_when(profile.created_at)} ({escape(profile.source)})"
    console.print(f"{joined}, confirmed: {_when(profile.confirmed_at)}")
    # The send window and a newsletter's "09:00 local" are read in this zone: staff check it here.
    zone = profile.timezone or "not known (the clinic's time zone is used)"
    console.print(f"time zone: {escape(zone)}")
    if profile.paused_until:
        console.print(f"paused until {_when(profile.paused_until)}")
    answers = ", ".join(f"{k}={v}" for k, v in sorted(profile.attributes.items()))
    console.print(f"answers: {escape(answers) or '-'}")
    console.print(f"topics: {', '.join(profile.topics) or '-'}    tags: {', '.join(profile.tags) or '-'}")
    if not profile.enrollments:
        console.print("Campaigns: none (`cadence campaigns enroll NAME --email ADDRESS` adds them to one)")
    else:
        courses = Table(title="Campaigns")
        for column in ("campaign", "segment", "state", "next email", "next send"):
            courses.add_column(column)
        for e in profile.enrollments:
            state = f"{e.state} {_when(e.ended_at)} {e.end_reason}".strip() if e.ended_at else e.state
            courses.add_row(e.campaign, e.segment or "-", escape(state), e.next_step or "-", _when(e.next_send_at))
        console.print(courses)
    # One line per event: a five-column table cut the times and names to "2026-12-06T11:06…" at
    # 80 columns (issue 13 trial).
    console.print("[bold]Timeline[/bold]" + ("" if profile.timeline else ": nothing sent yet"))
    for t in profile.timeline:
        what = " · ".join(dict.fromkeys(part for part in (t.campaign, t.step) if part))  # a newsletter: once
        detail = f"  ({escape(t.detail)})" if t.detail else ""
        console.print(f"{_when(t.at)}  {t.what:<12} {escape(what)}{detail}", soft_wrap=True)


def _when(at: str | None) -> str:
    """``2026-12-07T12:30:00.123+00:00`` → ``2026-12-07 12:30 UTC``; None → ``-``."""
    if not at:
        return "-"
    try:
        return f"{datetime.fromisoformat(at):%Y-%m-%d %H:%M %Z}".strip()
    except ValueError:
        return at


def export(
    query: Query = None,
    status: Status = None,
    tag: Tag = None,
    segment: Segment = None,
    campaign: Campaign = None,
    attr: Attr = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file (default: the screen)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv (for spreadsheets) or json (one person per line)")] = "csv",
) -> None:
    """Export subscribers (everyone, or those the filters find) as CSV or JSON lines."""
    from cadence.operations.subscriber_export import export_subscribers

    if fmt not in ("csv", "json"):
        raise UsageError(f"--format: {fmt!r} is not csv or json")
    kind: Literal["csv", "json"] = "csv" if fmt == "csv" else "json"
    with _transaction() as (session, settings):
        wanted = _filter(settings, query, status, tag, segment, campaign, attr)
        today, now = settings.clock().now().date(), settings.clock().now()
        if out is None:
            count = export_subscribers(session, wanted, today, sys.stdout, fmt=kind, actor=actor(), now=now)
            return
        if out.is_dir():
            raise InputError(f"{out}: is a directory")
        folder = out.parent if str(out.parent) else Path(".")
        if not folder.is_dir():  # else the error named the hidden temporary file below
            raise InputError(f"--out: no folder {str(folder)!r} to write {out.name!r} in")
        # Written next to the target and renamed at the end: never a half-written export.
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
                count = export_subscribers(session, wanted, today, stream, fmt=kind, actor=actor(), now=now)
            os.replace(temporary, out)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    Console(stderr=True, highlight=False).print(f"{count:,} subscriber(s) written to {escape(str(out))}")


def erase_command(
    email: Annotated[str, typer.Argument(help="The subscriber's email address")],
    yes: Annotated[bool, typer.Option("--yes", help="Yes, erase this person for good")] = False,
) -> None:
    """Erase a subscriber and everything about them, as their own erase link does (GDPR). The
    address stays blocked so no import brings it back; only their own signup lifts it."""
    from cadence.config import get_settings
    from cadence.core.suppression_keys import SuppressionKeys
    from cadence.operations.subscriber_tools import after_erase, erase_subscriber

    if not yes:
        raise UsageError("erasing cannot be undone: add --yes")
    with _transaction() as (session, settings):
        erased = erase_subscriber(
            session, email, keys=SuppressionKeys.from_settings(settings), actor=actor(), now=settings.clock().now()
        )
    after_erase(get_settings().database_url)
    # The address as typed, and the id the audit log keeps for them (it keeps no address).
    console.print(f"[green]erased[/green] {escape(email)}; the address stays blocked (audit log: subscriber:{erased})")


def unsubscribe_command(
    email: Annotated[str, typer.Argument(help="The subscriber's email address")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why, e.g. 'asked on the phone' (kept in the audit log)")
    ] = "asked staff",
) -> None:
    """Unsubscribe someone who asked you (phone, desk, a reply): as their own unsubscribe link
    does, their campaigns end and no newsletter reaches them. Only their own signup undoes it."""
    from cadence.operations.subscriber_tools import unsubscribe_subscriber

    with _transaction() as (session, settings):
        note = unsubscribe_subscriber(session, email, reason=reason, actor=actor(), now=settings.clock().now())
    if note:
        console.print(f"{escape(email)}: {escape(note)}")
        return
    console.print(f"[green]unsubscribed[/green] {escape(email)}")


def suppress_command(
    email: Annotated[str, typer.Argument(help="The subscriber's email address")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the suppression and in the audit log)")],
) -> None:
    """Stop every email to this address (their courses end), keeping the person on the list."""
    from cadence.operations.subscriber_tools import suppress_subscriber

    with _transaction() as (session, settings):
        change = suppress_subscriber(session, email, reason=reason, actor=actor(), now=settings.clock().now())
    console.print(f"[green]suppressed[/green] {escape(email)}" + (f" ({change.note})" if change.note else ""))


def unsuppress_command(email: Annotated[str, typer.Argument(help="The email address")]) -> None:
    """Allow emails to this address again (after a staff suppression, a bounce or a complaint)."""
    from cadence.core.suppression_keys import SuppressionKeys
    from cadence.operations.subscriber_tools import unsuppress_subscriber

    with _transaction() as (session, settings):
        change = unsuppress_subscriber(
            session, email, keys=SuppressionKeys.from_settings(settings), actor=actor(), now=settings.clock().now()
        )
    console.print(f"[green]unsuppressed[/green] {escape(email)}" + (f": {change.note}" if change.note else ""))


def tag_command(
    emails: Annotated[list[str] | None, typer.Argument(help="Email addresses (or use the filters instead)")] = None,
    add: Annotated[list[str] | None, typer.Option("--add", help="Tag to add (repeatable)")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Tag to remove (repeatable)")] = None,
    query: Annotated[str | None, typer.Option("--search", help="Tag everyone whose address or name has this")] = None,
    status: Status = None,
    tag: Tag = None,
    segment: Segment = None,
    campaign: Campaign = None,
    attr: Attr = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Add or remove tags, on the given addresses or on everyone the filters find."""
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.exit_goals import goal_campaigns
    from cadence.operations.subscriber_tools import tag_subscribers

    by_filter = any([query, status, tag, segment, campaign, attr])
    if bool(emails) == by_filter:
        raise UsageError("give email addresses or filters (--search, --status, --tag, --segment, --attr), not both")
    if not add and not remove:
        raise UsageError("give --add TAG or --remove TAG")
    with _transaction() as (session, settings):
        wanted = _filter(settings, query, status, tag, segment, campaign, attr) if by_filter else None
        now = settings.clock().now()
        change = tag_subscribers(
            session,
            emails=emails or [],
            wanted=wanted,
            today=now.date(),
            add=add or [],
            remove=remove or [],
            actor=actor(),
            now=now,
            goals=goal_campaigns(CampaignCatalog(settings.campaigns_dir, settings.templates_dir)) if add else (),
        )
    if as_json:
        _print_json(asdict(change))
        return
    ended = f", {change.goals_reached} drip(s) ended: exit goal reached" if change.goals_reached else ""
    console.print(f"{change.subscribers} subscriber(s): {change.added} tag(s) added, {change.removed} removed{ended}")
