"""Read models for staff: how far a campaign has got, per step and segment.

Every delivery counts somewhere (issue #9): besides the steps × segments grid, each step has
totals by outcome over all its deliveries, whatever their segment. A delivery refused or
skipped before a segment was chosen (an unsubscribe, a suppression, a 5xx to RCPT) has no
segment, so only the totals show it; ``reasons`` says why, grouped by the recorded reason.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.table import Table
from sqlalchemy.orm import Session

from cadence.catalog import CampaignCatalog
from cadence.config import Settings
from cadence.core.campaign import Campaign
from cadence.core.segments import choose_segment
from cadence.db import reports as db_reports
from cadence.db.session import transaction

STATES = ("due", "queued", "sent", "failed")
# Per step, over every delivery of it: `queued` includes deliveries a worker is sending now.
TOTALS = ("due", "queued", "sent", "failed", "skipped")
WHY = ("failed", "skipped")

_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")
_ATTEMPT = re.compile(r"^attempt \d+: ")


def campaign_counts(session: Session, campaign: Campaign, now: datetime) -> Counter[tuple[int, str, str]]:
    """Counts keyed by (step index, segment id, state) with state in due/queued/sent/failed.

    Sent and failed deliveries are counted in the segment they were rendered for; pending work
    in the segment the subscriber matches now (the send path decides at send time)."""
    counts: Counter[tuple[int, str, str]] = Counter()
    for step_index, segment_id, state, n in db_reports.finished_counts(session, campaign.id):
        counts[(step_index, segment_id, state)] += n
    for step_index, attributes in db_reports.pending_deliveries(session, campaign.id):
        counts[(step_index, choose_segment(campaign.segments, attributes, now.date()).id, "queued")] += 1
    for step_index, attributes in db_reports.due_enrollments(session, campaign.id, now):
        counts[(step_index, choose_segment(campaign.segments, attributes, now.date()).id, "due")] += 1
    return counts


def step_totals(session: Session, campaign: Campaign, now: datetime) -> Counter[tuple[int, str]]:
    """Counts keyed by (step index, outcome) over every delivery of the step, segment or not
    (outcomes in ``TOTALS``), plus enrollments due for the step now."""
    totals: Counter[tuple[int, str]] = Counter()
    for step_index, state, n in db_reports.state_counts(session, campaign.id):
        totals[(step_index, "queued" if state == "sending" else state)] += n
    for step_index, n in db_reports.due_enrollments_by_step(session, campaign.id, now):
        totals[(step_index, "due")] += n
    return totals


def step_reasons(session: Session, campaign: Campaign) -> Counter[tuple[int, str, str]]:
    """Counts keyed by (step index, failed|skipped, reason): the recorded error, with addresses
    masked and the attempt number dropped, so the same refusal groups across recipients."""
    reasons: Counter[tuple[int, str, str]] = Counter()
    for step_index, state, error, n in db_reports.reason_counts(session, campaign.id, WHY):
        reasons[(step_index, state, reason_label(error))] += n
    return reasons


def reason_label(error: str | None) -> str:
    """One line that groups alike: ``550 5.1.1 <x@example.com>: no such user`` for anyone."""
    first = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    label = _ADDRESS.sub("<address>", _ATTEMPT.sub("", first)).strip()
    return (label[:117] + "...") if len(label) > 120 else (label or "(no reason recorded)")


def _step_indexes(campaign: Campaign, totals: Counter[tuple[int, str]]) -> list[int]:
    """The campaign's steps, and any step index that has deliveries but is no longer in it."""
    return sorted(set(range(len(campaign.steps))) | {index for index, _ in totals})


def _step_label(campaign: Campaign, index: int) -> str:
    if index < len(campaign.steps):
        return f"{index + 1}. {campaign.steps[index].id}"
    return f"{index + 1}. (no longer in the campaign)"


def status_table(campaign: Campaign, counts: Counter[tuple[int, str, str]], totals: Counter[tuple[int, str]]) -> Table:
    """Steps × segments (due, queued, sent, failed where the segment is known), then each
    step's sent, failed and skipped totals over all its deliveries (`step_totals`)."""
    table = Table(title=f"{campaign.name} ({campaign.id})")
    table.add_column("step")
    for segment in campaign.segments:
        table.add_column(segment.name, justify="right")
    for outcome in ("sent", "failed", "skipped"):
        table.add_column(f"total {outcome}", justify="right")
    for index in _step_indexes(campaign, totals):
        cells = []
        for segment in campaign.segments:
            parts = [f"{counts[(index, segment.id, s)]} {s}" for s in STATES if counts[(index, segment.id, s)]]
            cells.append(" · ".join(parts) or "–")
        table.add_row(
            _step_label(campaign, index), *cells, *(str(totals[(index, o)]) for o in ("sent", "failed", "skipped"))
        )
    return table


def reasons_table(campaign: Campaign, reasons: Counter[tuple[int, str, str]]) -> Table:
    """Why deliveries failed or were skipped: one row per step, outcome and reason."""
    table = Table(title="Failed and skipped deliveries, by reason")
    for name in ("step", "outcome", "reason"):
        table.add_column(name)
    table.add_column("count", justify="right")
    for (index, outcome, reason), n in sorted(reasons.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1])):
        table.add_row(_step_label(campaign, index), outcome, reason, str(n))
    if not reasons:
        table.add_row("–", "–", "nothing failed or was skipped", "0")
    return table


def status_document(
    campaign: Campaign,
    counts: Counter[tuple[int, str, str]],
    totals: Counter[tuple[int, str]],
    reasons: Counter[tuple[int, str, str]] | None,
) -> dict[str, Any]:
    """The same report as plain data, for ``campaigns status --json``."""
    steps = []
    for index in _step_indexes(campaign, totals):
        step: dict[str, Any] = {
            "step": index + 1,
            "id": campaign.steps[index].id if index < len(campaign.steps) else None,
            "segments": {seg.id: {s: counts[(index, seg.id, s)] for s in STATES} for seg in campaign.segments},
            "totals": {o: totals[(index, o)] for o in TOTALS},
        }
        if reasons is not None:
            step["reasons"] = {
                outcome: {r: n for (i, o, r), n in sorted(reasons.items()) if i == index and o == outcome}
                for outcome in WHY
            }
        steps.append(step)
    return {"campaign": campaign.id, "name": campaign.name, "steps": steps}


@dataclass(frozen=True)
class CampaignStatus:
    """Everything ``campaigns status`` shows; ``reasons`` is None unless asked for."""

    campaign: Campaign
    counts: Counter[tuple[int, str, str]]
    totals: Counter[tuple[int, str]]
    reasons: Counter[tuple[int, str, str]] | None

    def table(self) -> Table:
        return status_table(self.campaign, self.counts, self.totals)

    def reasons_table(self) -> Table:
        return reasons_table(self.campaign, self.reasons or Counter())

    def document(self) -> dict[str, Any]:
        return status_document(self.campaign, self.counts, self.totals, self.reasons)


def campaign_status(settings: Settings, name: str, *, reasons: bool = False) -> CampaignStatus:
    """Read the report of campaign `name` in one transaction (NotFound names a missing one)."""
    campaign = CampaignCatalog(settings.campaigns_dir).get(name)
    now = settings.clock().now()
    with transaction(settings.database_url) as session:
        counts = campaign_counts(session, campaign, now)
        totals = step_totals(session, campaign, now)
        why = step_reasons(session, campaign) if reasons else None
    return CampaignStatus(campaign, counts, totals, why)
