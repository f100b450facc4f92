"""``cadence campaigns diff``: every email of a campaign at the working tree against a git revision.

Campaigns are code, so a change to a template is reviewed like code: which of the emails changed
(the step x segment grid of :func:`cadence.review.previews.email_grid`, the one the preview shows), and
how: the subject, the plain text, the links added or removed, or only the look. The revision's
``campaigns/`` and ``templates/`` are read with ``git archive`` into a temporary directory; the
user's checkout is never touched. Pictures of the changed emails: :mod:`cadence.review.visual_diff`.
"""

from __future__ import annotations

import difflib
import html
import io
import re
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jinja2 import FileSystemLoader

from cadence.core.campaign import Campaign
from cadence.core.render import RenderedEmail, Renderer, render_email
from cadence.errors import CadenceError, InputError, TemplateError
from cadence.files.campaigns import list_campaigns, load_campaign
from cadence.review.previews import DEFAULT_SAMPLE_SUBSCRIBERS, SAMPLE_LINKS, email_grid, preview_file_name

Status = Literal["added", "removed", "changed"]
_HREF = re.compile(r"""\bhref\s*=\s*(["'])(.*?)\1""", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Side:
    """One email rendered on one side of the comparison, or the error that stopped it."""

    html: str = ""
    subject: str = ""
    text: str = ""
    error: str | None = None

    @property
    def links(self) -> list[str]:
        return list(dict.fromkeys(html.unescape(m.group(2)).strip() for m in _HREF.finditer(self.html)))


@dataclass(slots=True)
class EmailChange:
    """What changed in one email (``name`` as in the preview: ``01-why-it-hurts--trail``)."""

    name: str
    status: Status
    before: Side
    after: Side
    pictures: list[Path] = field(default_factory=list)  # side-by-side PNGs, differing pixels marked
    differing: dict[int, tuple[int, int, int, int] | None] = field(default_factory=dict)  # width -> box

    @property
    def subject_changed(self) -> bool:
        return self.before.subject != self.after.subject

    @property
    def text_lines(self) -> tuple[int, int]:
        """Lines of the plain text (removed, added), as a unified diff counts them."""
        removed = added = 0
        lines = difflib.unified_diff(self.before.text.splitlines(), self.after.text.splitlines(), n=0, lineterm="")
        for line in lines:
            if line.startswith("-") and not line.startswith("---"):
                removed += 1
            elif line.startswith("+") and not line.startswith("+++"):
                added += 1
        return removed, added

    @property
    def links_added(self) -> list[str]:
        return [link for link in self.after.links if link not in self.before.links]

    @property
    def links_removed(self) -> list[str]:
        return [link for link in self.before.links if link not in self.after.links]

    @property
    def looks_only(self) -> bool:
        """Same subject, text and links: only the HTML (style, layout) differs."""
        same_words = not self.subject_changed and self.before.text == self.after.text
        return self.status == "changed" and same_words and not self.links_added and not self.links_removed


@dataclass(slots=True)
class CampaignDiff:
    campaign_id: str
    status: Literal["added", "removed", "changed", "unchanged"]
    total: int  # emails in the grid (the larger side)
    emails: list[EmailChange]


# --- the revision's files ----------------------------------------------------------------------


def _git(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise InputError("git is not installed: campaigns diff compares with a git revision") from None


def checkout_revision(revision: str, directories: Sequence[Path], dest: Path) -> list[Path]:
    """Write `directories` (inside one git work tree) as they are at `revision` under `dest`.

    Returns their paths under `dest` (an empty directory for one that does not exist at the
    revision). Raises InputError naming the problem: not a git repository, unknown revision.
    """
    probe = next((d for d in directories if d.is_dir()), Path.cwd())
    top = _git(["rev-parse", "--show-toplevel"], probe)
    if top.returncode != 0:
        raise InputError(f"{probe} is not inside a git repository: campaigns diff compares with a git revision")
    root = Path(top.stdout.decode().strip()).resolve()
    if revision.startswith("-"):
        raise InputError(f"unknown revision {revision!r}")
    commit = _git(["rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], root)
    if commit.returncode != 0:
        raise InputError(f"unknown revision {revision!r}: git cannot find such a commit")
    sha = commit.stdout.decode().strip()
    paths = []
    for directory in directories:
        try:
            relative = directory.resolve().relative_to(root)
        except ValueError:
            raise InputError(f"{directory} is outside the git repository at {root}") from None
        target = dest / relative
        target.mkdir(parents=True, exist_ok=True)
        paths.append(target)
        listed = _git(["ls-tree", "--name-only", sha, "--", relative.as_posix()], root)
        if not listed.stdout.strip():
            continue  # not there at the revision: an empty directory (every campaign "added")
        archive = _git(["archive", "--format=tar", sha, "--", relative.as_posix()], root)
        if archive.returncode != 0:
            raise InputError(f"git archive {revision} failed: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
    return paths


# --- rendering and comparing -------------------------------------------------------------------


def load_campaigns(campaigns_dir: Path, only: str | None, *, where: str) -> dict[str, Campaign]:
    """Campaigns by id (`only`: just that one, or none if it does not exist). A broken file is an
    error naming `where` (the working tree or the revision) instead of a temporary path."""
    campaigns: dict[str, Campaign] = {}
    for path in list_campaigns(campaigns_dir):
        if only is not None and path.stem != only:
            continue
        try:
            campaign = load_campaign(path)
        except CadenceError as exc:
            raise type(exc)(f"{where}: {str(exc).replace(str(campaigns_dir), 'campaigns')}") from None
        campaigns[campaign.id] = campaign
    return campaigns


def render_grid(
    campaign: Campaign, templates_dir: Path, subscriber: Mapping[str, Any] = DEFAULT_SAMPLE_SUBSCRIBERS[0]
) -> dict[str, Side]:
    """Every email of the preview grid, by preview name, rendered for `subscriber`."""
    renderer = Renderer(FileSystemLoader(str(templates_dir)))
    emails: dict[str, Side] = {}
    for step, segments in email_grid(campaign):
        for segment in segments:
            name = preview_file_name(campaign, step, segment).removesuffix(".html")
            try:
                email: RenderedEmail = render_email(
                    renderer.variant(campaign, step, segment), subscriber=subscriber, links=SAMPLE_LINKS
                )
            except TemplateError as exc:
                emails[name] = Side(error=str(exc))
                continue
            emails[name] = Side(email.html, email.subject, email.text)
    return emails


def compare_campaign(
    campaign_id: str,
    before: tuple[Campaign, Path] | None,
    after: tuple[Campaign, Path] | None,
) -> CampaignDiff:
    """The emails of one campaign that differ between `before` and `after` ((campaign, templates dir))."""
    old = render_grid(*before) if before else {}
    new = render_grid(*after) if after else {}
    changes = []
    for name in dict.fromkeys([*new, *old]):
        a, b = old.get(name), new.get(name)
        if a is None and b is not None:
            changes.append(EmailChange(name, "added", Side(), b))
        elif b is None and a is not None:
            changes.append(EmailChange(name, "removed", a, Side()))
        elif a is not None and b is not None and a != b:
            changes.append(EmailChange(name, "changed", a, b))
    status: Literal["added", "removed", "changed", "unchanged"]
    status = "added" if not before else "removed" if not after else "changed" if changes else "unchanged"
    return CampaignDiff(campaign_id, status, max(len(old), len(new)), changes)


def describe(change: EmailChange) -> list[str]:
    """How one email changed, one short line per aspect (the CLI's listing)."""
    if change.status != "changed":
        side = change.after if change.status == "added" else change.before
        return [f"{change.status}: {side.subject or side.error!r}"]
    if change.after.error:  # a broken email: its empty subject, text and links are not news
        return [f"error now: {change.after.error}"]
    lines = []
    if change.before.error:
        lines.append(f"error before: {change.before.error}")
    if change.subject_changed:
        lines.append(f"subject: {change.before.subject!r} -> {change.after.subject!r}")
    removed, added = change.text_lines
    if removed or added:
        lines.append(f"text: -{removed} +{added} lines")
    lines += [f"link added: {link}" for link in change.links_added]
    lines += [f"link removed: {link}" for link in change.links_removed]
    if change.looks_only:
        lines.append("looks different (same subject, text and links: style or layout)")
    return [line for line in lines if line]
