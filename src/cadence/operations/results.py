"""Campaign results for staff: ``cadence report CAMPAIGN`` and ``GET /api/admin/report/{id}``.

Per step × segment: sent, delivered (sent minus bounced), failed, unique opens and clicks with
their rates, unsubscribes, hard and soft bounces, complaints, exit goal reached (people who
reached the campaign's goal, a booking, after this step was their last email; its rate is of
those sent this step); the most clicked links; why deliveries failed. Plain dataclasses, so
the CLI, the API and the console show the same numbers.

Opens are **inflated**: Apple Mail Privacy Protection (iOS 15+) and some corporate filters fetch
every image, the tracking pixel included, when the message arrives, so an "open" may be a proxy
and not a person (Apple, "Mail Privacy Protection", 2021). Clicks are the better signal.

The SQL, and why it stays under a second at 6 million deliveries: :mod:`cadence.db.results`.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TextIO

from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.db import enrollment_tallies
from cadence.db import results as sql
from cadence.db.transactional import TRANSACTIONAL_CAMPAIGN
from cadence.errors import InputError, NotFound
from cadence.files.campaigns import did_you_mean
from cadence.operations.campaign_progress import reason_label

OPENS_CAVEAT = (
    "Opens are inflated: Apple Mail Privacy Protection and some mail filters load the tracking "
    "pixel for every message they receive. Compare clicks, not opens."
)
TOP_LINKS = 10


@dataclass(frozen=True)
class ResultRow:
    """One step × segment (segment "": not sent, so no segment was chosen: waiting, skipped or
    failed before one was; :attr:`segment_label` says which, for people)."""

    step: int  # 1-based
    step_id: str
    segment: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    queued: int = 0
    skipped: int = 0
    unique_opens: int = 0
    open_rate: float | None = None
    unique_clicks: int = 0
    click_rate: float | None = None
    clicks: int = 0
    unsubscribes: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0
    # Reached the exit goal with this step as their last email (segment "": before the first).
    exit_goal_reached: int = 0
    goal_rate: float | None = None
    # Of `skipped`: not sent because the subscriber had already reached the exit goal.
    skipped_exit_goal: int = 0
    segment_label: str = ""  # the segment, or what a row without one holds (segment_label())


@dataclass(frozen=True)
class DayRow:
    """One UTC day of the whole campaign: emails sent that day, and the first open, click,
    unsubscribe and bounce (hard or soft) of each email recorded that day."""

    day: str  # YYYY-MM-DD
    sent: int = 0
    opens: int = 0
    clicks: int = 0
    unsubscribes: int = 0
    bounces: int = 0


@dataclass(frozen=True)
class ResultsReport:
    campaign: str
    name: str
    since: str | None
    until: str | None
    rows: list[ResultRow]
    total: ResultRow
    top_links: list[tuple[str, int]]
    failures: list[tuple[int, str, int]]  # (step, reason, count)
    opens_caveat: str = OPENS_CAVEAT
    folded_events: int = 0
    generated_at: str = ""
    notes: list[str] = field(default_factory=list)
    kind: str = "drip"  # or "newsletter": one step, a row per segment
    daily: list[DayRow] | None = None  # asked for (daily=True): the per-day series
    exit_goal: str = ""  # the drip's exit goal in words ("" if it has none)

    def document(self) -> dict[str, Any]:
        """Plain JSON-ready data (``--json`` and the API)."""
        doc = asdict(self)
        if self.daily is None:
            del doc["daily"]
        doc["top_links"] = [{"url": url, "unique_clicks": n} for url, n in self.top_links]
        doc["failures"] = [{"step": s, "reason": r, "count": n} for s, r, n in self.failures]
        return doc


def parse_day(value: str | None, field_name: str) -> date | None:
    """A ``YYYY-MM-DD`` option, or InputError naming it."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InputError(f"{field_name}: {value!r} is not a date (YYYY-MM-DD)") from None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def catch_up(sessions: Callable[[], AbstractContextManager[Session]], *, lag: timedelta = sql.DEFAULT_LAG) -> int:
    """Fold what arrived since the last report into the rollups (cadence.db.results), in a
    transaction of its own (`sessions` opens one). Returns the rows read. The report is exact
    without it; folding keeps it fast."""
    with sessions() as session:
        folded = sql.fold(session, lag=lag)
        enrollment_tallies.compact(session)  # the console's people counts (same idea: keep it small)
        return folded


def campaign_results(
    session: Session,
    campaign_id: str,
    campaign: Campaign | None,
    now: datetime,
    *,
    since: date | None = None,
    until: date | None = None,
    folded: int = 0,
    reasons: bool = False,
    daily: bool = False,
) -> ResultsReport:
    """The report of `campaign_id` (`campaign`: its definition, for step names and segment
    order; None when the file is gone but deliveries remain). `since`/`until`: days, inclusive
    (UTC). `reasons`: also why deliveries failed (reads every failed row: slower on a big
    list). `daily`: also the per-day series (from the same rollups). A newsletter's id works
    too (its copies are on the same ledger): one row per segment. Call it first in a fresh
    transaction: it reads as of one instant."""
    sql.snapshot(session)
    if since is not None and until is not None and since > until:
        raise InputError("--since must not be after --until")
    kind = sql.delivery_kind(session, campaign_id)
    if campaign is None and kind is None:
        # As every other "no such campaign": the closest names, then the list (issue 15 trial).
        names = sorted(sql.campaign_ids(session) - {TRANSACTIONAL_CAMPAIGN})
        listing = f" (with emails: {', '.join(names)})" if names else ""
        raise NotFound(
            f"no campaign or newsletter {campaign_id!r} with emails to report on"
            f"{did_you_mean(campaign_id, names)}{listing}"
        )
    start = datetime.combine(since, time(), UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time(), UTC) if until else None
    since_day = since.isoformat() if since else None
    until_day = until.isoformat() if until else None
    counts: Counter[tuple[int, str, str]] = Counter()
    for step, segment, metric, n in sql.rollup_counts(session, campaign_id, since_day, until_day):
        counts[(step, segment, metric)] += n
    for step, segment, state, n in sql.live_delivery_counts(session, campaign_id, start, end):
        counts[(step, segment, "queued" if state == "sending" else state)] += n
    live_events, live_links = sql.live_event_counts(session, campaign_id, start, end)
    for step, segment, metric, n in live_events:
        counts[(step, segment, metric)] += n
    cells = sorted({(s, g) for s, g, _ in counts}, key=_order(campaign))
    rows = [_labelled(_row(campaign, step, segment, counts)) for step, segment in cells]
    if kind == "newsletter":  # its one "step" is the newsletter itself
        rows = [replace(r, step_id=campaign_id) for r in rows]
    clicks: Counter[int] = Counter(dict(sql.link_counts(session, campaign_id, since_day, until_day)))
    clicks.update(dict(live_links))
    top = clicks.most_common(TOP_LINKS)
    urls = sql.link_urls(session, [link for link, _ in top])
    failures = Counter[tuple[int, str]]()
    for step, error, n in sql.failure_reasons(session, campaign_id) if reasons else ():
        failures[(step + 1, reason_label(error))] += n
    return ResultsReport(
        campaign=campaign_id,
        name=campaign.name if campaign else campaign_id,
        since=since_day,
        until=until_day,
        rows=rows,
        total=_total(rows),
        top_links=sorted(((urls.get(link, f"link {link}"), n) for link, n in top), key=lambda x: (-x[1], x[0])),
        failures=sorted(((s, r, n) for (s, r), n in failures.items()), key=lambda x: (x[0], -x[2])),
        folded_events=folded,
        generated_at=now.isoformat(),
        kind=kind or "drip",
        daily=_daily(sql.daily_counts(session, campaign_id, start, end)) if daily else None,
        exit_goal=campaign.exit_goal.describe() if campaign and campaign.exit_goal else "",
    )


def _daily(counts: list[tuple[str, str, int]]) -> list[DayRow]:
    metrics = {"sent": "sent", "open": "opens", "click": "clicks", "unsubscribe": "unsubscribes"}
    metrics |= {"hard_bounce": "bounces", "soft_bounce": "bounces"}
    days: dict[str, Counter[str]] = {}
    for day, metric, n in counts:
        if metric in metrics:
            days.setdefault(day, Counter())[metrics[metric]] += n
    return [DayRow(day, **found) for day, found in sorted(days.items())]


# Stable CSV columns (scripts and spreadsheets key on them): change only by adding at the end.
CSV_COLUMNS = (
    "campaign",
    "step",
    "step_id",
    "segment",
    "sent",
    "delivered",
    "failed",
    "queued",
    "skipped",
    "unique_opens",
    "open_rate",
    "unique_clicks",
    "click_rate",
    "clicks",
    "unsubscribes",
    "hard_bounces",
    "soft_bounces",
    "complaints",
    "exit_goal_reached",
    "goal_rate",
    "skipped_exit_goal",
    "segment_label",
)
DAILY_CSV_COLUMNS = ("campaign", "day", "sent", "opens", "clicks", "unsubscribes", "bounces")


def write_csv(report: ResultsReport, out: TextIO, *, daily: bool = False) -> int:
    """The report as CSV: one row per step × segment (no total row: a spreadsheet sums), or
    with `daily` one row per day. Rates are fractions (0.25), empty when nothing was
    delivered. Returns the rows written."""
    writer = csv.writer(out, lineterminator="\n")
    if daily:
        writer.writerow(DAILY_CSV_COLUMNS)
        for day in report.daily or []:
            writer.writerow([report.campaign, *(getattr(day, c) for c in DAILY_CSV_COLUMNS[1:])])
        return len(report.daily or [])
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        values = [getattr(row, c) for c in CSV_COLUMNS[1:]]
        writer.writerow([report.campaign, *("" if v is None else v for v in values)])
    return len(report.rows)


def _order(campaign: Campaign | None) -> Callable[[tuple[int, str]], tuple[int, int, str]]:
    positions = {s.id: i for i, s in enumerate(campaign.segments)} if campaign else {}
    return lambda cell: (cell[0], positions.get(cell[1], len(positions)), cell[1])


def _row(campaign: Campaign | None, step: int, segment: str, counts: Counter[tuple[int, str, str]]) -> ResultRow:
    def m(name: str) -> int:
        return counts[(step, segment, name)]

    sent = m("sent")
    delivered = max(sent - m("hard_bounce") - m("soft_bounce"), 0)
    step_id = campaign.steps[step].id if campaign and step < len(campaign.steps) else f"step {step + 1}"
    return ResultRow(
        step=step + 1,
        step_id=step_id,
        segment=segment,
        sent=sent,
        delivered=delivered,
        failed=m("failed"),
        queued=m("queued"),
        skipped=m("skipped"),
        unique_opens=m("open"),
        open_rate=_rate(m("open"), delivered),
        unique_clicks=m("click"),
        click_rate=_rate(m("click"), delivered),
        clicks=m("clicks"),
        unsubscribes=m("unsubscribe"),
        hard_bounces=m("hard_bounce"),
        soft_bounces=m("soft_bounce"),
        complaints=m("complaint"),
        exit_goal_reached=m("exit_goal"),
        goal_rate=_rate(m("exit_goal"), sent),
        skipped_exit_goal=m(sql.GOAL_SKIPPED),
        segment_label=segment,
    )


def segment_label(row: ResultRow) -> str:
    """The segment column for people. A segment is chosen when an email is sent, so a row
    without one holds emails not sent: say which (a blank "(none yet)" row next to "exit goal
    reached" read as a missing segment in the marketer's cold trial)."""
    if row.segment:
        return row.segment
    parts = []
    if row.skipped_exit_goal:
        parts.append(f"{row.skipped_exit_goal:,} exit goal reached")
    if row.skipped - row.skipped_exit_goal:
        parts.append(f"{row.skipped - row.skipped_exit_goal:,} skipped")
    if row.failed:
        parts.append(f"{row.failed:,} failed")
    if row.queued:
        parts.append(f"{row.queued:,} waiting")
    return "not sent: " + ", ".join(parts) if parts else "not sent"


def _labelled(row: ResultRow) -> ResultRow:
    return replace(row, segment_label=segment_label(row))


def _total(rows: list[ResultRow]) -> ResultRow:
    names = ("sent", "delivered", "failed", "queued", "skipped", "unique_opens", "unique_clicks", "clicks")
    more = ("unsubscribes", "hard_bounces", "soft_bounces", "complaints", "exit_goal_reached", "skipped_exit_goal")
    sums = {n: sum(getattr(r, n) for r in rows) for n in (*names, *more)}
    # The whole campaign's goal rate is of the people it reached (sent its first step), not of
    # every email sent: one person converts once.
    reached = sum(r.sent for r in rows if r.step == 1)
    return ResultRow(
        step=0,
        step_id="all steps",
        segment="all segments",
        segment_label="all segments",
        **sums,
        open_rate=_rate(sums["unique_opens"], sums["delivered"]),
        click_rate=_rate(sums["unique_clicks"], sums["delivered"]),
        goal_rate=_rate(sums["exit_goal_reached"], reached),
    )
