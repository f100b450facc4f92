"""``cadence campaigns validate | preview | simulate | diff``: the staff tools of :mod:`cadence.review.previews`.

Directories default to the settings (``CADENCE_CAMPAIGNS_DIR``, ``CADENCE_TEMPLATES_DIR``) and
can be overridden per command. Errors of ours print one line and exit with status 1.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from jinja2 import FileSystemLoader
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cadence.cli.options import parse_attrs
from cadence.core.campaign import Campaign
from cadence.core.render import Renderer
from cadence.errors import CadenceError, InputError, UsageError

F = TypeVar("F", bound=Callable[..., None])

CampaignsDir = Annotated[Path | None, typer.Option("--campaigns-dir", help="Default: CADENCE_CAMPAIGNS_DIR")]
TemplatesDir = Annotated[Path | None, typer.Option("--templates-dir", help="Default: CADENCE_TEMPLATES_DIR")]


def register(campaigns_app: typer.Typer) -> None:
    """Add ``validate``, ``preview``, ``simulate`` and ``diff`` to the ``campaigns`` command group."""
    campaigns_app.command("validate")(validate)
    campaigns_app.command("preview")(preview)
    campaigns_app.command("simulate")(simulate)
    from cadence.cli.campaign_diff import diff

    campaigns_app.command("diff")(diff)


def _friendly(command: F) -> F:
    """Our errors as one red line and exit status 1 (also when called without cadence.cli.main)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except CadenceError as exc:
            Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, UsageError) else 1) from None

    return wrapper  # type: ignore[return-value]


def _console() -> Console:
    # Made per call, not at import: Rich reads the terminal width (and COLUMNS) when created.
    return Console()


def _dirs(campaigns_dir: Path | None, templates_dir: Path | None) -> tuple[Path, Path]:
    if campaigns_dir is None or templates_dir is None:
        from cadence.config import get_settings

        settings = get_settings()
        campaigns_dir = campaigns_dir or settings.campaigns_dir
        templates_dir = templates_dir or settings.templates_dir
    return campaigns_dir, templates_dir


def _load(name: str, campaigns_dir: Path | None, templates_dir: Path | None) -> tuple[Campaign, Path, Renderer]:
    from cadence.files.campaigns import find_campaign

    campaigns, templates = _dirs(campaigns_dir, templates_dir)
    # Without templates_dir: a missing template is reported by the renderer with the others.
    campaign = find_campaign(name, campaigns)
    return campaign, templates, Renderer(FileSystemLoader(str(templates)))


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@_friendly
def validate(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Campaign name (file stem) or path to its YAML file. Leave it out to check only the campaign "
            "files, signup forms and sender file (quick: no emails are rendered)."
        ),
    ] = None,
    campaigns_dir: CampaignsDir = None,
    templates_dir: TemplatesDir = None,
) -> None:
    """Check a campaign's emails (every step x segment, with sample subscribers), the signup forms
    in campaigns/forms/ and the sender file (name and postal address), and report every problem.
    A newsletter name (campaigns/newsletters/NAME.yaml) checks that newsletter.
    Exits 1 if anything must be fixed; warnings alone do not fail."""
    campaigns, templates = _dirs(campaigns_dir, templates_dir)
    from cadence.files.newsletters import is_newsletter

    if name is not None and is_newsletter(name, campaigns):
        from cadence.cli.newsletters import validate_newsletter

        validate_newsletter(name, campaigns, templates)  # problems: one error line, exit 1
        return
    failed = _validate_campaign(name, campaigns, templates) if name is not None else _load_every_campaign(campaigns)
    failed = _validate_forms(campaigns, campaigns_dir is None) or failed
    if failed:
        raise typer.Exit(1)


def _load_every_campaign(campaigns: Path) -> bool:
    from cadence.files.campaigns import list_campaigns, load_campaign

    failed = False
    for path in list_campaigns(campaigns):
        try:
            load_campaign(path)
        except CadenceError as exc:
            failed = True
            _console().print(str(exc), highlight=False, markup=False, soft_wrap=True)
    return failed


def _validate_forms(campaigns: Path, from_settings: bool) -> bool:
    """Print the forms' and sender file's problems; True if one is an error."""
    from cadence.config import get_settings
    from cadence.files.forms import check_forms

    sender = get_settings().sender_file if from_settings else campaigns / "sender.yaml"
    problems = check_forms(campaigns / "forms", sender, campaigns)
    errors = [p for p in problems if p.severity == "error"]
    for problem in problems:
        label = "[red]error[/red]" if problem.severity == "error" else "[yellow]warning[/yellow]"
        where = _shown(Path(problem.source.split(":")[0]))
        line = problem.source[len(problem.source.split(":")[0]) :]
        _console().print(f"{escape(where + line)}: {label}: {escape(problem.message)}", highlight=False, soft_wrap=True)
    if errors:
        _console().print(f"[red]{len(errors)} problem(s)[/red] in the signup forms or the sender file")
    else:
        _console().print("Signup forms and sender file: valid" + (f" ({len(problems)} warning(s))" if problems else ""))
    return bool(errors)


def _validate_campaign(name: str, campaigns: Path, templates: Path) -> bool:
    from cadence.core.render import render_email
    from cadence.files.campaigns import find_campaign
    from cadence.review.previews import DEFAULT_SAMPLE_SUBSCRIBERS, SAMPLE_LINKS, validate_campaign

    # Without templates_dir: a missing template is reported by the renderer with the others.
    campaign = find_campaign(name, campaigns)
    renderer = Renderer(FileSystemLoader(str(templates)))
    problems = validate_campaign(campaign, renderer, sample_subscribers=DEFAULT_SAMPLE_SUBSCRIBERS)
    if problems:
        for problem in problems:
            file = problem.file if problem.file == campaign.source else _shown(templates / problem.file)
            where = f"{file}:{problem.line}" if problem.line else file
            which = f"  [{problem.step_id}/{problem.segment_id}]" if problem.step_id else ""
            _console().print(f"{where}: {problem.message}{which}", highlight=False, markup=False, soft_wrap=True)
        _console().print(f"[red]{len(problems)} problem(s)[/red] in {campaign.id}")
        return True
    # One row per email: a campaign composed from facets has more segments than fit across.
    table = Table(title=f"{campaign.name}: subjects (all emails valid)")
    for column in ("Step", "Segment", "Subject"):
        table.add_column(column)
    for number, step in enumerate(campaign.steps, 1):
        for segment in campaign.segments:
            variant = renderer.variant(campaign, step, segment)
            email = render_email(variant, subscriber=DEFAULT_SAMPLE_SUBSCRIBERS[0], links=SAMPLE_LINKS)
            table.add_row(f"{number}. {step.id}", segment.name, email.subject)
    _console().print(table)
    return False


@_friendly
def preview(
    name: Annotated[str, typer.Argument(help="Campaign name (file stem) or path to its YAML file")],
    out: Annotated[Path | None, typer.Option("--out", help="Default: <data dir>/preview/<campaign>")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the preview on 127.0.0.1")] = False,
    port: Annotated[int, typer.Option("--port", help="Port for --serve")] = 8025,
    screenshots: Annotated[
        Path | None, typer.Option("--screenshots", help="Also save PNGs at 375 and 600 px here (headless Chromium)")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Screenshot only emails whose file name contains this")
    ] = None,
    campaigns_dir: CampaignsDir = None,
    templates_dir: TemplatesDir = None,
) -> None:
    """Write every email and an index.html grid (steps down, segments across, phone and desktop)."""
    from cadence.review.previews import screenshot_emails, write_preview

    campaign, _, renderer = _load(name, campaigns_dir, templates_dir)
    if out is None:
        from cadence.config import get_settings

        out = get_settings().data_dir / "preview" / campaign.id
    index = write_preview(campaign, renderer, out)
    _console().print(f"[green]Preview written:[/green] {_shown(index)}")
    if screenshots is not None:
        files = sorted(p for p in out.glob("*.html") if p.name != "index.html")
        chosen = {p.name: p.read_text(encoding="utf-8") for p in files if not only or any(o in p.name for o in only)}
        for shot in screenshot_emails(chosen, screenshots):
            _console().print(f"  {_shown(shot.path)}  (scroll width {shot.scroll_width} px)")
    if serve:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
        with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
            _console().print(f"Serving on http://127.0.0.1:{port}/index.html (Ctrl-C to stop)")
            with contextlib.suppress(KeyboardInterrupt):
                server.serve_forever()


@_friendly
def simulate(
    name: Annotated[str, typer.Argument(help="Campaign name (file stem) or path to its YAML file")],
    email: Annotated[str | None, typer.Option("--email", help="An existing subscriber")] = None,
    attr: Annotated[list[str] | None, typer.Option("--attr", help="key=value, repeatable (instead of --email)")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA zone, e.g. Europe/Paris")] = None,
    start: Annotated[str | None, typer.Option("--start", help="Enrollment time, ISO 8601 (default: now)")] = None,
    campaigns_dir: CampaignsDir = None,
    templates_dir: TemplatesDir = None,
) -> None:
    """When each email would reach one subscriber, if every step goes out when it is due."""
    from cadence.core.schedule import subscriber_zone
    from cadence.files.campaigns import find_campaign
    from cadence.review.previews import simulate_timeline

    if (email is None) == (not attr):
        raise UsageError("give either --email E or one or more --attr key=value")
    campaign = find_campaign(name, _dirs(campaigns_dir, templates_dir)[0])
    attributes: dict[str, Any] = dict(parse_attrs(attr or []))
    subscriber_tz = None
    if email is not None:
        attributes, subscriber_tz = _subscriber(email)
    zone = _zone(tz) if tz else subscriber_zone(subscriber_tz, campaign)
    enrolled_at = _start(start, zone)
    table = Table(title=f"{campaign.name}: enrolled {enrolled_at.astimezone(zone):%a %Y-%m-%d %H:%M %Z}")
    for column in ("#", "Step", "Segment", f"Local ({zone.key})", "UTC"):
        table.add_column(column)
    for number, entry in enumerate(simulate_timeline(campaign, attributes, zone, enrolled_at), 1):
        table.add_row(
            str(number),
            entry.step_id,
            entry.segment_id,
            f"{entry.send_at_local:%a %Y-%m-%d %H:%M %Z}",
            f"{entry.send_at_utc:%Y-%m-%d %H:%M}",
        )
    _console().print(table)


def _subscriber(email: str) -> tuple[dict[str, Any], str | None]:
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.enrollment import find_subscriber

    with transaction(get_settings().database_url) as session:
        subscriber = find_subscriber(session, email)
        return dict(subscriber.attributes or {}), subscriber.timezone


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"--tz: {name!r} is not an IANA time zone such as America/New_York") from None


def _start(text: str | None, zone: ZoneInfo) -> datetime:
    if text is None:
        from cadence.config import get_settings

        return get_settings().clock().now()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--start: {text!r} is not an ISO 8601 time like 2025-03-07T08:30") from None
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
