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

from cadence.config import Settings
from cadence.core.campaign import Campaign
from cadence.core.segments import choose_segment
from cadence.db import reports as db_reports
from cadence.db.session import transaction
from cadence.files.catalog import CampaignCatalog

STATES = ("due", "queued", "postponed", "sent", "failed")
# Per step, over every delivery of it: `queued` includes deliveries a worker is sending now;
# `postponed` ones wait for the next send window (in the table, among the people waiting).
TOTALS = ("due", "queued", "postponed", "sent", "failed", "skipped")
WHY = ("failed", "skipped")

_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")
_ATTEMPT = re.compile(r"^attempt \d+: ")


def campaign_counts(session: Session, campaign: Campaign, now: datetime) -> Counter[tuple[int, str, str]]:
    """Counts keyed by (step index, segment id, state) with state in ``STATES``.

    Sent and failed deliveries are counted in the segment they were rendered for; pending work
    in the segment the subscriber matches now (the send path decides at send time)."""
    counts: Counter[tuple[int, str, str]] = Counter()
    for step_index, segment_id, state, n in db_reports.finished_counts(session, campaign.id):
        counts[(step_index, segment_id, state)] += n
    for step_index, attributes, postponed in db_reports.pending_deliveries(session, campaign.id, now):
        state = "postponed" if postponed else "queued"
        counts[(step_index, choose_segment(campaign.segments, attributes, now.date()).id, state)] += 1
    for step_index, attributes in db_reports.due_enrollments(session, campaign.id, now):
        counts[(step_index, choose_segment(campaign.segments, attributes, now.date()).id, "due")] += 1
    return counts


def step_totals(session: Session, campaign: Campaign | str, now: datetime) -> Counter[tuple[int, str]]:
    """Counts keyed by (step index, outcome) over every delivery of the step, segment or not
    (outcomes in ``TOTALS``), plus enrollments due for the step now. `campaign` may be an id
    alone: a held campaign's file cannot be read, its rows still can."""
    campaign_id = campaign if isinstance(campaign, str) else campaign.id
    totals: Counter[tuple[int, str]] = Counter()
    for step_index, state, n in db_reports.state_counts(session, campaign_id):
        totals[(step_index, "queued" if state == "sending" else state)] += n
    for step_index, n in db_reports.due_enrollments_by_step(session, campaign_id, now):
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


def status_table(
    campaign: Campaign,
    counts: Counter[tuple[int, str, str]],
    totals: Counter[tuple[int, str]],
    waiting: dict[int, tuple[int, datetime | None]] | None = None,
) -> Table:
    """One row per step: people waiting for it (enrolled, not yet sent: scheduled, or their email
    postponed to the next send window), then its totals over every delivery (`step_totals`).
    Narrow on purpose (readable at 80 columns whatever the number of segments): the
    per-segment counts are :func:`segments_table`."""
    table = Table(title=f"{campaign.name} ({campaign.id})", caption="sent, failed, skipped: every delivery of the step")
    table.add_column("step")
    if waiting is not None:
        table.add_column("waiting", justify="right")
    for name in ("due", "queued", "sent", "failed", "skipped"):
        table.add_column(name, justify="right")
    for index in _step_indexes(campaign, totals):
        first = [str(waiting.get(index, (0, None))[0])] if waiting is not None else []
        table.add_row(
            _step_label(campaign, index),
            *first,
            *(str(totals[(index, o)]) for o in ("due", "queued", "sent", "failed", "skipped")),
        )
    return table


def segments_table(campaign: Campaign, counts: Counter[tuple[int, str, str]]) -> Table:
    """Where the emails went by segment: one row per segment and step that has any (segment
    ids, not columns: a campaign composed from facets has six or more segments). Postponed
    emails have no column (80 columns wide with the longest segment ids): the caption counts
    them, as the step table counts their people among the waiting."""
    shown = tuple(s for s in STATES if s != "postponed")
    later = sum(n for (_, _, state), n in counts.items() if state == "postponed")
    caption = f"{later} more postponed (waiting, above)" if later else None
    table = Table(title="By segment", caption=caption)
    for name in ("segment", "step", *shown):
        table.add_column(name, justify="left" if name in ("segment", "step") else "right")
    rows = 0
    for segment in campaign.segments:
        for index in range(len(campaign.steps)):
            cells = [counts[(index, segment.id, s)] for s in shown]
            if any(cells):
                table.add_row(segment.id, _step_label(campaign, index), *(str(c) for c in cells))
                rows += 1
    if not rows:
        table.add_row("–", "–", *("0" for _ in shown))
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
    waiting: dict[int, tuple[int, datetime | None]] | None = None,
) -> dict[str, Any]:
    """The same report as plain data, for ``campaigns status --json``."""
    steps = []
    for index in _step_indexes(campaign, totals):
        people, first = (waiting or {}).get(index, (0, None))
        step: dict[str, Any] = {
            "step": index + 1,
            "id": campaign.steps[index].id if index < len(campaign.steps) else None,
            "waiting": people,
            "next_send_at": first.isoformat() if first else None,
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
class People:
    """Who is in a campaign: enrolled ever, active, waiting for their next email, and when the
    earliest of those goes out. ``waiting`` counts people, whether their next email is
    scheduled or already queued but postponed (``postponed`` of them: it came due outside the
    send window, or in their pause; ``postponed_until``: the earliest goes out then)."""

    enrolled: int = 0
    active: int = 0
    waiting: int = 0
    next_send_at: datetime | None = None
    postponed: int = 0
    postponed_until: datetime | None = None

    @classmethod
    def of(
        cls, summary: tuple[int, int, int, datetime | None], postponed: dict[int, tuple[int, datetime | None]]
    ) -> People:
        """From ``enrollment_summary``'s tuple and ``postponed_by_step``'s steps of one campaign."""
        enrolled, active, scheduled, first = summary
        held, until = _sum_steps(postponed)
        return cls(enrolled, active, scheduled + held, _earliest(first, until), held, until)

    def document(self) -> dict[str, Any]:
        return {
            "enrolled": self.enrolled,
            "active": self.active,
            "waiting": self.waiting,
            "next_send_at": self.next_send_at.isoformat() if self.next_send_at else None,
            "postponed": self.postponed,
            "postponed_until": self.postponed_until.isoformat() if self.postponed_until else None,
        }

    def line(self) -> str:
        when = _when(self.next_send_at) if self.next_send_at else "none scheduled"
        line = (
            f"{self.enrolled} enrolled, {self.active} still in the series, "
            f"{self.waiting} waiting for their next email (next: {when})"
        )
        return line + (f"; {self.postponed_line()}" if self.postponed else "")

    def postponed_line(self) -> str:
        """``1 email postponed to the next send window, next Wed 9 Dec 12:00 UTC`` (or "")."""
        if not self.postponed:
            return ""
        emails = "email" if self.postponed == 1 else "emails"
        until = f", next {_when(self.postponed_until)}" if self.postponed_until else ""
        return f"{self.postponed} {emails} postponed to the next send window{until}"


def _when(moment: datetime) -> str:
    return moment.strftime("%a %-d %b %H:%M UTC")


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def _sum_steps(steps: dict[int, tuple[int, datetime | None]]) -> tuple[int, datetime | None]:
    return sum(n for n, _ in steps.values()), _earliest(*(first for _, first in steps.values()))


def with_postponed(
    waiting: dict[int, tuple[int, datetime | None]], postponed: dict[int, tuple[int, datetime | None]]
) -> dict[int, tuple[int, datetime | None]]:
    """People waiting per step: scheduled, plus those whose email of the step is postponed."""
    steps = set(waiting) | set(postponed)
    return {
        i: (waiting.get(i, (0, None))[0] + postponed.get(i, (0, None))[0],
            _earliest(waiting.get(i, (0, None))[1], postponed.get(i, (0, None))[1]))
        for i in steps
    }  # fmt: skip


def split_postponed(
    totals: Counter[tuple[int, str]], postponed: dict[int, tuple[int, datetime | None]]
) -> Counter[tuple[int, str]]:
    """`totals` with each step's postponed emails out of ``queued`` and under ``postponed``:
    "queued" means in the workers' hands or ready for them now."""
    split = Counter(totals)
    for index, (n, _) in postponed.items():
        split[(index, "queued")] -= n
        split[(index, "postponed")] += n
    return split


@dataclass(frozen=True)
class CampaignStatus:
    """Everything ``campaigns status`` shows; ``reasons`` is None unless asked for. ``campaign``
    is None for a held campaign whose file is missing or broken (``held`` says why)."""

    campaign_id: str
    campaign: Campaign | None
    counts: Counter[tuple[int, str, str]]
    totals: Counter[tuple[int, str]]
    reasons: Counter[tuple[int, str, str]] | None
    state: str = "running"
    held: str | None = None
    people: People = People()
    waiting: dict[int, tuple[int, datetime | None]] | None = None

    @property
    def headline(self) -> str:
        state = f"held: {self.held}" if self.held else self.state
        return f"{self.campaign_id}: {state}. {self.people.line()}"

    def table(self) -> Table:
        if self.campaign is None:
            table = Table(title=f"{self.campaign_id} (file missing or broken)")
            for name in ("step", *TOTALS):
                table.add_column(name, justify="left" if name == "step" else "right")
            for index in sorted({i for i, _ in self.totals}):
                table.add_row(f"{index + 1}.", *(str(self.totals[(index, o)]) for o in TOTALS))
            return table
        return status_table(self.campaign, self.counts, self.totals, self.waiting or {})

    def segments_table(self) -> Table | None:
        return segments_table(self.campaign, self.counts) if self.campaign is not None else None

    def reasons_table(self) -> Table:
        if self.campaign is None:
            return Table(title="Failed and skipped deliveries, by reason: the campaign file is needed")
        return reasons_table(self.campaign, self.reasons or Counter())

    def document(self) -> dict[str, Any]:
        if self.campaign is not None:
            document = status_document(self.campaign, self.counts, self.totals, self.reasons, self.waiting or {})
        else:
            steps = [
                {"step": i + 1, "id": None, "totals": {o: self.totals[(i, o)] for o in TOTALS}}
                for i in sorted({i for i, _ in self.totals})
            ]
            document = {"campaign": self.campaign_id, "name": self.campaign_id, "steps": steps}
        return {**document, "state": self.state, "held": self.held, "people": self.people.document()}


def campaign_status(settings: Settings, name: str, *, reasons: bool = False) -> CampaignStatus:
    """Read the report of campaign `name` in one transaction. A campaign whose file is missing
    or broken but which has rows is reported as held (``held`` set, exit status 1 in the CLI);
    a name nobody knows is NotFound, with the closest names."""
    from cadence.db import campaign_states as states
    from cadence.operations.holds import file_problem
    from cadence.operations.lifecycle import known_campaigns, newsletter_names, resolve_campaign

    catalog = CampaignCatalog(settings.campaigns_dir)
    problem = file_problem(catalog, name)
    now = settings.clock().now()
    with transaction(settings.database_url) as session:
        if problem is not None:
            known = known_campaigns(session, settings.campaigns_dir) - {""}
            resolve_campaign(name, known, newsletter_names(session, settings.campaigns_dir))
        campaign = catalog.get(name) if problem is None else None
        state = states.state_of(session, name)
        summary = states.enrollment_summary(session, [name]).get(name, (0, 0, 0, None))
        postponed = states.postponed_by_step(session, now, [name]).get(name, {})
        people = People.of(summary, postponed)
        waiting = with_postponed(states.waiting_by_step(session, name), postponed)
        totals = split_postponed(step_totals(session, name, now), postponed)
        if campaign is None:
            return CampaignStatus(name, None, Counter(), totals, None, state, f"file missing/broken: {problem}", people)
        counts = campaign_counts(session, campaign, now)
        why = step_reasons(session, campaign) if reasons else None
    return CampaignStatus(name, campaign, counts, totals, why, state, None, people, waiting)
