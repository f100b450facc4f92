"""What the console's campaign pages show (issue 14): every drip and newsletter with its state,
and one campaign's results with a funnel chart per step. Reads only: the actions are
operations/lifecycle.py (drips), operations/newsletters.py and operations/test_sends.py."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cadence.catalog import CampaignCatalog
from cadence.config import Settings
from cadence.core.bar_chart import BarChart, bar_chart
from cadence.core.campaign import Campaign
from cadence.db.session import transaction
from cadence.errors import CadenceError
from cadence.operations import newsletters, results
from cadence.operations.campaign_overview import CampaignSummary, campaign_summaries

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
    return any(item["id"] == campaign_id for item in newsletters.list_all(settings))


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


def campaign_page(settings: Settings, catalog: CampaignCatalog, campaign_id: str, now: datetime) -> CampaignPage:
    """The results of one campaign (NotFound if nothing is known of it). Folds new events into
    the rollups first, as ``cadence report`` does."""
    campaign = definition(catalog, campaign_id)
    folded = results.catch_up(lambda: transaction(settings.database_url))
    with transaction(settings.database_url) as session:
        report = results.campaign_results(session, campaign_id, campaign, now, folded=folded)
    return CampaignPage(report, step_funnels(report), campaign, is_newsletter(settings, campaign_id))
