"""What the console's campaign pages show (issue 14): every drip and newsletter with its state,
and one campaign's results with a funnel chart per step. Reads only: the actions are
operations/lifecycle.py (drips), operations/newsletters.py and operations/test_sends.py."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cadence.config import Settings
from cadence.core.bar_chart import BarChart, bar_chart
from cadence.core.campaign import Campaign, Segment, Step
from cadence.core.render import Renderer
from cadence.db.session import transaction
from cadence.errors import CadenceError, NotFound
from cadence.files.catalog import CampaignCatalog
from cadence.operations import newsletters, results
from cadence.operations.campaign_overview import CampaignSummary, campaign_summaries
from cadence.review import previews as authoring

# The funnel of one step: each stage is a subset of the one before (delivered = sent minus
# bounces; opens and clicks are unique people, counted on delivered copies: operations/results).
FUNNEL = (("sent", "Sent"), ("delivered", "Delivered"), ("unique_opens", "Opened"), ("unique_clicks", "Clicked"))


@dataclass(frozen=True)
class CampaignList:
    drips: list[CampaignSummary]
    newsletters: list[dict[str, Any]]  # operations.newsletters.list_all's items


def campaign_list(settings: Settings) -> CampaignList:
    """Drips (archived ones too, marked) and newsletters. A scheduled newsletter also has a
    campaign_states row (newsletters mirror their state there), so it is listed once, as a
    newsletter."""
    letters = newsletters.list_all(settings)
    ids = {item["id"] for item in letters}
    drips = [s for s in campaign_summaries(settings, include_archived=True) if s.id not in ids]
    return CampaignList(drips, letters)


def is_newsletter(settings: Settings, campaign_id: str) -> bool:
    return newsletters.exists(settings, campaign_id)


def definition(catalog: CampaignCatalog, campaign_id: str) -> Campaign | None:
    """The drip's file, or None (a newsletter, or a file gone or broken: the report still
    shows what its deliveries did)."""
    try:
        return catalog.get(campaign_id)
    except CadenceError:
        return None


@dataclass(frozen=True)
class StepFunnel:
    step: int
    step_id: str
    stages: list[tuple[str, int]]
    chart: BarChart


def step_funnels(report: results.ResultsReport) -> list[StepFunnel]:
    """One funnel per step, its segments added up (the table beside it has them apart)."""
    sums: dict[tuple[int, str], Counter[str]] = {}
    for row in report.rows:
        counter = sums.setdefault((row.step, row.step_id), Counter())
        for name, _ in FUNNEL:
            counter[name] += getattr(row, name)
    funnels = []
    for (step, step_id), counter in sorted(sums.items()):
        stages = [(label, counter[name]) for name, label in FUNNEL]
        funnels.append(StepFunnel(step, step_id, stages, bar_chart(stages, width=360, height=160, label_every=1)))
    return funnels


@dataclass(frozen=True)
class CampaignPage:
    report: results.ResultsReport
    funnels: list[StepFunnel]
    campaign: Campaign | None
    newsletter: bool
    summary: CampaignSummary | None = None  # a drip's people and queued emails, as `campaigns list`


def campaign_page(settings: Settings, catalog: CampaignCatalog, campaign_id: str, now: datetime) -> CampaignPage:
    """The results of one campaign (NotFound if nothing is known of it). Folds new events into
    the rollups first, as ``cadence report`` does."""
    campaign = definition(catalog, campaign_id)
    folded = results.catch_up(lambda: transaction(settings.database_url))
    with transaction(settings.database_url) as session:
        report = results.campaign_results(session, campaign_id, campaign, now, folded=folded)
    newsletter = is_newsletter(settings, campaign_id)
    summaries = [] if newsletter else campaign_summaries(settings, include_archived=True)
    summary = next((s for s in summaries if s.id == campaign_id), None)
    return CampaignPage(report, step_funnels(report), campaign, newsletter, summary)


# --- the preview grid (issue 14): every step × segment, each in its own sandboxed frame -------


@dataclass(frozen=True)
class PreviewCell:
    step: int  # 1-based, as in the frame's URL
    step_id: str
    segment_id: str
    segment_name: str


@dataclass(frozen=True)
class PreviewGrid:
    """What the campaign page shows of the emails: the grid (steps down, segments across; each
    frame loads one email from :func:`preview_html`) and every problem validation finds."""

    rows: list[tuple[int, str, list[PreviewCell]]]  # (step number, step id, its cells)
    problems: list[str]


def preview_grid(campaigns_dir: Path, renderer: Renderer, campaign_id: str) -> PreviewGrid | None:
    """The grid of a drip, with the problems ``cadence campaigns validate`` reports (authoring's
    own functions, the campaign loaded as that command loads it: the same samples and checks).
    None for a newsletter (no file of that name in the campaigns folder). A file that does not
    load is one problem and no grid."""
    try:
        campaign = _authoring_catalog(campaigns_dir).get(campaign_id)
    except NotFound:
        return None
    except CadenceError as exc:
        return PreviewGrid([], [str(exc)])
    grid = authoring.email_grid(campaign)
    rows = [
        (number, step.id, [PreviewCell(number, step.id, s.id, s.name) for s in segments])
        for number, (step, segments) in enumerate(grid, 1)
    ]
    return PreviewGrid(rows, _problems(campaign, renderer, grid))


# Validation renders every email three times (about 0.2 s for lower-back-pain's 48, once the
# MJML is compiled): too much for each view of a page that should answer in 300 ms. The result
# is kept per campaign while neither its file (the catalog gives the same object until the file
# changes) nor any compiled email (the renderer's content hashes, which follow template edits)
# changed. A few campaigns at most: the oldest goes first.
_VALIDATED: dict[str, tuple[Campaign, tuple[str, ...], list[str]]] = {}
_VALIDATED_MAX = 32


@functools.cache
def _authoring_catalog(campaigns_dir: Path) -> CampaignCatalog:
    """Campaigns as ``cadence campaigns validate`` loads them: without a base URL (guide and
    site links are checked as links, not as this server's http:// address)."""
    return CampaignCatalog(campaigns_dir)


def _problems(campaign: Campaign, renderer: Renderer, grid: list[tuple[Step, list[Segment]]]) -> list[str]:
    try:
        hashes = tuple(renderer.variant(campaign, step, s).content_hash for step, segments in grid for s in segments)
    except CadenceError:
        hashes = ()  # a template that does not compile: validation says where, every time
    kept = _VALIDATED.get(campaign.id)
    if hashes and kept is not None and kept[0] is campaign and kept[1] == hashes:
        return kept[2]
    source = campaign.source or ""
    problems = [
        str(p).replace(source, Path(source).name, 1) if source else str(p)
        for p in authoring.validate_campaign(campaign, renderer)
    ]
    if hashes:
        _VALIDATED.pop(campaign.id, None)
        if len(_VALIDATED) >= _VALIDATED_MAX:
            _VALIDATED.pop(next(iter(_VALIDATED)))
        _VALIDATED[campaign.id] = (campaign, hashes, problems)
    return problems


def preview_html(catalog: CampaignCatalog, renderer: Renderer, campaign_id: str, step: int, segment_id: str) -> str:
    """One email of the grid as HTML (authoring.preview_email: the sample subscriber, sample
    links). NotFound without such a cell; TemplateError (or CampaignError) if it does not render."""
    campaign = catalog.get(campaign_id)
    cell = authoring.find_cell(campaign, step, segment_id)
    if cell is None:
        raise NotFound(f"{campaign_id} has no step {step} for segment {segment_id!r}")
    return authoring.preview_email(campaign, renderer, *cell)[1].html
