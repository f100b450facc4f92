"""``cadence campaigns diff [REV]``: which emails changed since a git revision, and how.

Exit status: 0 when it ran (changes or not), 1 on an error, 2 on a usage error. With
``--exit-code`` it follows ``git diff --exit-code``: 1 when an email changed, 0 when none, and
errors exit 2 so they are never read as "changed".
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cadence.cli.authoring import CampaignsDir, TemplatesDir, _console, _dirs, _shown
from cadence.errors import CadenceError, InputError, NotFound

if TYPE_CHECKING:
    from cadence.core.campaign import Campaign
    from cadence.review.campaign_diff import CampaignDiff


def diff(
    revision: Annotated[str, typer.Argument(help="Git revision to compare the working tree with")] = "HEAD",
    campaign: Annotated[str | None, typer.Option("--campaign", help="Only this campaign (its file name)")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where the pictures go (default: <data dir>/preview/<campaign>)")
    ] = None,
    screenshots: Annotated[
        bool, typer.Option("--screenshots/--no-screenshots", help="Pictures of the changed emails (Chromium)")
    ] = True,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Like git diff --exit-code: 1 if an email changed (errors: 2)")
    ] = False,
    campaigns_dir: CampaignsDir = None,
    templates_dir: TemplatesDir = None,
) -> None:
    """Render every step x segment at the working tree and at REV (default HEAD) and list which
    emails changed: subject, text, links added or removed, or only the look; the changed ones are
    photographed side by side at 375 and 600 px with the differing pixels in red, beside the
    preview grid (diff.html)."""
    try:
        changed = _run(revision, campaign, out, screenshots, campaigns_dir, templates_dir)
    except CadenceError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if exit_code else 1) from None
    if exit_code and changed:
        raise typer.Exit(1)


def _run(
    revision: str,
    only: str | None,
    out: Path | None,
    screenshots: bool,
    campaigns_dir: Path | None,
    templates_dir: Path | None,
) -> bool:
    from cadence.review.campaign_diff import checkout_revision, compare_campaign, describe, load_campaigns

    campaigns, templates = _dirs(campaigns_dir, templates_dir)
    if not campaigns.is_dir():
        raise NotFound(f"no campaigns directory {campaigns}")
    with tempfile.TemporaryDirectory(prefix="cadence-diff-") as tmp:
        old_campaigns, old_templates = checkout_revision(revision, [campaigns, templates], Path(tmp))
        now = load_campaigns(campaigns, only, where="working tree")
        then = load_campaigns(old_campaigns, only, where=revision)
        if only is not None and not now:
            raise NotFound(f"no campaign {only!r} in {campaigns}")
        if only is not None and not then:
            raise InputError(f"campaign {only!r} does not exist at {revision}")
        changed = False
        broken = 0  # emails that no longer render: listed, then reported as an error
        console = _console()
        for campaign_id in dict.fromkeys([*now, *then]):
            before = (then[campaign_id], old_templates) if campaign_id in then else None
            after = (now[campaign_id], templates) if campaign_id in now else None
            result = compare_campaign(campaign_id, before, after)
            if not result.emails:
                console.print(f"{campaign_id}: no email changed since {escape(revision)} ({result.total} emails)")
                continue
            changed = True
            head = f"{campaign_id}: {len(result.emails)} of {result.total} emails changed since {escape(revision)}"
            note = f" (campaign {result.status})" if result.status != "changed" else ""
            console.print(f"[bold]{head}[/bold]{note}")
            for change in result.emails:
                console.print(f"  {change.name}", highlight=False)
                for line in describe(change):
                    console.print(f"    {escape(line)}", highlight=False, soft_wrap=True)
            failing = sum(1 for change in result.emails if change.status != "removed" and change.after.error)
            broken += failing
            if screenshots and not failing:
                _pictures(result, revision, after, out, console)
    if broken:
        raise InputError(
            f"{broken} email(s) fail to render in the working tree: `cadence campaigns validate` shows where"
        )
    return changed


def _pictures(
    result: CampaignDiff, revision: str, after: tuple[Campaign, Path] | None, out: Path | None, console: Console
) -> None:
    """The preview grid of the working tree, and beside it diff.html with the changed emails."""
    from jinja2 import FileSystemLoader

    from cadence.core.render import Renderer
    from cadence.review.previews import write_preview
    from cadence.review.visual_diff import picture_changes, write_diff_page

    if out is None:
        from cadence.config import get_settings

        out = get_settings().data_dir / "preview" / result.campaign_id
    index = None
    if after is not None:
        campaign, templates = after
        index = write_preview(campaign, Renderer(FileSystemLoader(str(templates))), out)
    try:
        picture_changes(result.emails, out / "diff")
    except Exception as exc:  # playwright's errors: no Chromium, or it would not start
        if "Executable doesn't exist" in str(exc) or "Failed to launch" in str(exc):
            raise InputError("the pictures need Chromium at /usr/bin/chromium (apt-get install chromium); "
                             "or pass --no-screenshots") from None
        raise
    for change in result.emails:
        for width, path in zip((375, 600), change.pictures, strict=False):
            box = change.differing.get(width)
            where = f"pixels differ in x {box[0]}-{box[2]}, y {box[1]}-{box[3]}" if box else "no pixel differs"
            console.print(f"  {change.name} {width} px: {where}: {_shown(path)}", highlight=False, soft_wrap=True)
    page = write_diff_page(result, revision, out, index)
    console.print(f"[green]Side by side:[/green] {_shown(page)}")
