"""What the staff console's read pages show (issue 14): the dashboard, the subscriber search and
profile, the audit log. Plain functions over a database session, a campaign catalog and `now`;
the console routes call one of them per page and render the answer.

The subscriber search here is the console's simple one (address or first name); the profile's
actions (tags, suppress, export, erase) are operations/subscriber_tools.py's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cadence.core.bar_chart import BarChart, bar_chart
from cadence.core.campaign import Campaign
from cadence.db import campaign_states
from cadence.db import console as store
from cadence.db import results as results_sql
from cadence.db.campaign_states import RUNNING
from cadence.db.models import AuditEntry, Delivery, Enrollment, Subscriber, SubscriberTopic, Suppression
from cadence.db.subscriber_search import campaign_conditions
from cadence.errors import CadenceError, InputError, NotFound
from cadence.files.campaigns import list_campaigns
from cadence.files.catalog import CampaignCatalog
from cadence.operations import results
from cadence.operations.subscriber_tools import (
    PENDING,
    STATUSES,
    check_tag,
    describe_event,
    pending_outlook,
    step_name,
)

DAYS = 30
# Bulk-sender limits. Complaints: Gmail and Yahoo require a spam rate under 0.3 % from February
# 2024 and ask senders to stay under 0.1 % (Google "Email sender guidelines"). Bounces: no
# mailbox provider publishes one number; 2 % is the common ESP warning line (Amazon SES puts an
# account under review at 5 %), so the dashboard warns at 2 %.
COMPLAINT_LIMIT = 0.003
COMPLAINT_TARGET = 0.001
BOUNCE_LIMIT = 0.02
BOUNCE_KINDS = ("hard_bounce",)
COMPLAINT_KINDS = ("complaint",)
PAGE_SIZE = 50
Sessions = Callable[[], AbstractContextManager[Session]]  # opens one transaction per call
# Searches count matches up to here ("1,000 or more"): db/console.search_subscribers says why.
COUNT_CAP = 1000


@dataclass(frozen=True)
class Rate:
    name: str
    count: int
    sent: int
    limit: float

    @property
    def value(self) -> float:
        return self.count / self.sent if self.sent else 0.0

    @property
    def over(self) -> bool:
        return self.value >= self.limit


@dataclass(frozen=True)
class CampaignRow:
    id: str
    name: str
    state: str  # running, paused, cancelled, archived; "file missing" or "invalid file"
    steps: int
    active: int
    sent: int
    queued: int
    failed: int
    problem: str = ""


@dataclass(frozen=True)
class NewsletterRow:
    id: str
    subject: str
    state: str  # scheduled, sending, sent, paused, cancelled
    send_at: str  # as scheduled: an instant, "<day> <time> local" or "now"
    recipients: int
    sent: int
    queued: int
    failed: int


@dataclass(frozen=True)
class Attention:
    kind: str  # failed, missing-file, invalid-file, paused, complaint-rate, bounce-rate
    text: str
    link: str = ""


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    sent_per_day: list[tuple[str, int]]
    chart: BarChart
    sent_total: int
    bounce: Rate
    complaint: Rate
    campaigns: list[CampaignRow]
    attention: list[Attention]
    recent_failures: list[Delivery] = field(default_factory=list)
    newsletters: list[NewsletterRow] = field(default_factory=list)


def _newsletter_rows(session: Session, since: datetime, totals: dict[str, Counter[str]]) -> list[NewsletterRow]:
    """The dashboard's newsletters: those to come and those of the last 30 days (a marketer's
    trial found scheduled newsletters nowhere on the dashboard). `totals`: results_sql.state_counts."""
    rows = []
    for letter in store.newsletters_for_dashboard(session, since, limit=10):
        count = totals.get(letter.id, Counter())
        rows.append(
            NewsletterRow(
                letter.id,
                letter.subject,
                letter.state,
                letter.send_at,
                letter.recipients,
                count.get("sent", 0),
                count.get("queued", 0),
                count.get("failed", 0),
            )
        )
    return rows


def _campaign_rows(
    session: Session, catalog: CampaignCatalog, totals: dict[str, Counter[str]], now: datetime
) -> list[CampaignRow]:
    states = store.campaign_states(session)
    # "Queued emails" as on the Campaigns page and in `campaigns list`: not those postponed to
    # the next send window (their people are waiting for their next email).
    postponed = campaign_states.postponed_by_step(session, now)
    active = store.active_enrollments_by_campaign(session)
    files = [path.stem for path in list_campaigns(catalog.campaigns_dir)]
    # Not newsletters (they have their own table): their mirrored state made the dashboard list a
    # scheduled newsletter as a drip whose "file is missing" under Needs attention (cold trial),
    # as `campaigns list` did before (db/campaign_states.known_campaign_ids).
    drips = (set(files) | set(active) | set(states)) - store.newsletter_ids(session)
    rows = []
    for campaign_id in sorted(drips):
        count = totals.get(campaign_id, Counter())
        state = states[campaign_id].state if campaign_id in states else "running"
        name, steps, problem = campaign_id, 0, ""
        try:
            campaign = catalog.get(campaign_id)
            name, steps = campaign.name, len(campaign.steps)
        except NotFound:
            problem = "file missing"
        except CadenceError as exc:
            problem = f"invalid file: {exc}"
        rows.append(
            CampaignRow(
                campaign_id,
                name,
                state,
                steps,
                active.get(campaign_id, 0),
                count.get("sent", 0),
                count.get("queued", 0) - sum(n for n, _ in postponed.get(campaign_id, {}).values()),
                count.get("failed", 0),
                problem,
            )
        )
    return rows


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def dashboard(sessions: Sessions, catalog: CampaignCatalog, now: datetime) -> Dashboard:
    """The dashboard as of `now`: the last 30 UTC days (today included). Folds what is new into
    the results rollups first (its own transaction, as the campaign page and ``cadence report``
    do), then reads everything as of one instant."""
    results.catch_up(sessions)
    with sessions() as session:
        results_sql.snapshot(session)
        return _dashboard(session, catalog, now)


def _dashboard(session: Session, catalog: CampaignCatalog, now: datetime) -> Dashboard:
    first_day = (now - timedelta(days=DAYS - 1)).date()
    since = datetime.combine(first_day, datetime.min.time(), tzinfo=now.tzinfo)
    # Emails sent per day and per campaign come from the results rollups + the rows not folded
    # yet (db/results.py): three scans of the ledger before (1.3-1.6 s at 600,000 deliveries).
    per_day = results_sql.sent_per_day(session, since)
    days = [(first_day + timedelta(days=i)).isoformat() for i in range(DAYS)]
    points = [(day, per_day.get(day, 0)) for day in days]
    sent = sum(per_day.values())  # the same rows as the chart: one scan, not two
    events = store.events_since(session, since, BOUNCE_KINDS + COMPLAINT_KINDS)
    bounce = Rate("Bounce rate", sum(events[k] for k in BOUNCE_KINDS), sent, BOUNCE_LIMIT)
    complaint = Rate("Complaint rate", sum(events[k] for k in COMPLAINT_KINDS), sent, COMPLAINT_LIMIT)
    totals = results_sql.state_counts(session)  # per campaign or newsletter id, for both tables
    campaigns = _campaign_rows(session, catalog, totals, now)
    failed, recent = store.failed_since(session, since, limit=5)
    attention: list[Attention] = []
    if failed:
        attention.append(
            Attention("failed", f"{_count(failed, 'delivery', 'deliveries')} failed in the last {DAYS} days")
        )
    for row in campaigns:
        if row.problem == "file missing" and (row.active or row.queued):
            attention.append(
                Attention(
                    "missing-file",
                    f"Campaign {row.id}: its file is missing, {_count(row.active, 'person', 'people')} still enrolled",
                )
            )
        elif row.problem.startswith("invalid file"):
            attention.append(Attention("invalid-file", f"Campaign {row.id}: {row.problem}"))
        if row.state == "paused":
            attention.append(
                Attention(
                    "paused", f"Campaign {row.id} is paused ({_count(row.queued, 'queued email', 'queued emails')})"
                )
            )
    for rate in (complaint, bounce):
        if rate.over:
            attention.append(
                Attention(
                    rate.name.split()[0].lower() + "-rate",
                    f"{rate.name} {rate.value:.2%} is over the {rate.limit:.1%} limit",
                )
            )
    letters = _newsletter_rows(session, since, totals)
    return Dashboard(now, points, bar_chart(points), sent, bounce, complaint, campaigns, attention, recent, letters)


@dataclass(frozen=True)
class SearchFilters:
    """The search page's filters: a subscriber status and a staff tag ("" = any)."""

    status: str = ""
    tag: str = ""

    def checked(self) -> SearchFilters:
        """The filters as the database compares them; InputError naming a bad one."""
        status, tag = self.status.strip(), self.tag.strip()
        if status and status not in STATUSES:
            raise InputError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        return SearchFilters(status, check_tag(tag) if tag else "")


@dataclass(frozen=True)
class SubscriberPage:
    query: str
    filters: SearchFilters
    total: int  # counted up to COUNT_CAP
    subscribers: list[Subscriber]
    next_before: int | None  # the next (older) page starts below this id; None on the last page
    first: bool  # this is the first page (no `before`)

    @property
    def capped(self) -> bool:
        return self.total >= COUNT_CAP


def search_subscribers(
    session: Session, query: str, *, filters: SearchFilters | None = None, before: int | None = None
) -> SubscriberPage:
    """One page of subscribers, newest first: those with ids below `before` (the page before's
    `next_before`), matching `query` (part of the address or first name) and `filters`."""
    query = query.strip()[:200]
    wanted = (filters or SearchFilters()).checked()
    total, found = store.search_subscribers(
        session, query, status=wanted.status, tag=wanted.tag, before=before, limit=PAGE_SIZE + 1, cap=COUNT_CAP
    )
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    return SubscriberPage(query, wanted, total, found, found[-1].id if more else None, before is None)


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # "delivery" or an event kind (open, click, hard_bounce, ...)
    campaign: str
    step: str
    state: str
    detail: str


@dataclass(frozen=True)
class SubscriberProfile:
    subscriber: Subscriber
    attributes: list[tuple[str, str]]
    tags: list[str]
    topics: list[SubscriberTopic]
    enrollments: list[Enrollment]
    timeline: list[TimelineEntry]
    # enrollment id -> when its step in the workers' hands (queued, or postponed to its window)
    # goes out: the enrollment's own next_send_at is empty meanwhile, by design.
    in_flight: dict[int, datetime] = field(default_factory=dict)
    suppressed: str | None = None  # why the address is suppressed (as `suppression` said)


def _plain(data: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {_text(v)}" for k, v in sorted(data.items()))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def subscriber_profile(
    session: Session,
    subscriber_id: int,
    *,
    limit: int = 200,
    campaign_named: Callable[[str], Campaign | None] = lambda _: None,
    suppression: Callable[[str], str | None] = lambda _: None,
) -> SubscriberProfile:
    """One subscriber with their tags, topics, enrollments and the newest `limit` deliveries and
    events as one timeline, newest first. NotFound if there is no such subscriber (erased).
    An email not sent yet is shown at the time it will go, "scheduled" or "will be skipped"
    (subscriber_tools.pending_outlook: `campaign_named` for the exit goal; `suppression`: why an
    address is suppressed, or None)."""
    person = store.subscriber(session, subscriber_id)
    if person is None:
        raise NotFound(f"no subscriber with id {subscriber_id}")
    deliveries = store.subscriber_deliveries(session, subscriber_id, limit=limit)
    enrollments = store.subscriber_enrollments(session, subscriber_id)
    states = {en.id: en.state for en in enrollments}
    tags = store.subscriber_tags(session, subscriber_id)
    suppressed = suppression(person.email)
    timeline = []
    run_states, zones = campaign_conditions(session, (d.campaign_id for d in deliveries if d.state in PENDING))
    for d in deliveries:
        at, state, detail = d.sent_at or d.created_at, d.state, d.last_error
        campaign = campaign_named(d.campaign_id) if d.enrollment_id is not None else None
        if d.state in PENDING:
            at, state, detail = pending_outlook(
                d,
                person,
                suppressed=suppressed is not None,
                enrollment_state=states.get(d.enrollment_id, "ended") if d.enrollment_id is not None else None,
                campaign=campaign,
                tags=tags,
                campaign_state=run_states.get(d.campaign_id, RUNNING),
                default_zone=zones.get(d.campaign_id),
            )
        timeline.append(TimelineEntry(at, f"{d.kind} email", d.campaign_id, step_name(d, campaign), state, detail))
    in_flight = {
        d.enrollment_id: d.not_before
        for d in deliveries
        if d.enrollment_id is not None and d.state in ("queued", "sending")
    }
    timeline += [
        TimelineEntry(e.created_at, e.kind, "", "", "", describe_event(e.kind, e.data) or _plain(e.data))
        for e in store.subscriber_events(session, subscriber_id, limit=limit)
    ]
    timeline.sort(key=lambda entry: entry.at, reverse=True)
    attributes = sorted((str(k), _text(v)) for k, v in (person.attributes or {}).items())
    return SubscriberProfile(
        person,
        attributes,
        tags,
        store.subscriber_topics(session, subscriber_id),
        enrollments,
        timeline,
        in_flight,
        suppressed,
    )


@dataclass(frozen=True)
class AuditPage:
    total: int
    page: int
    entries: list[AuditEntry]
    actor: str

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def audit_log(session: Session, *, page: int = 1, actor: str = "") -> AuditPage:
    page = max(1, page)
    total, entries = store.audit_page(session, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, actor=actor.strip())
    return AuditPage(total, page, entries, actor.strip())


@dataclass(frozen=True)
class BounceEntry:
    at: datetime
    kind: str
    subscriber_id: int | None
    email: str  # "" once the subscriber was erased
    detail: str


@dataclass(frozen=True)
class SuppressionsPage:
    counts: dict[str, int]
    suppressions: list[Suppression]
    events: list[BounceEntry]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


SUPPRESSION_EVENT_KINDS = ("hard_bounce", "soft_bounce", "complaint", "unsubscribe")


def suppressions_and_bounces(session: Session, *, limit: int = PAGE_SIZE) -> SuppressionsPage:
    """Suppressed addresses by reason with the newest `limit` (stored as hashes: an erased
    person leaves no readable address), and the newest bounces, complaints and unsubscribes."""
    events = [
        BounceEntry(
            event.created_at,
            event.kind,
            event.subscriber_id,
            email or "",
            ", ".join(f"{k}: {_text(v)}" for k, v in sorted(event.data.items())),
        )
        for event, email in store.recent_events_of(session, SUPPRESSION_EVENT_KINDS, limit=limit)
    ]
    return SuppressionsPage(store.suppression_counts(session), store.recent_suppressions(session, limit=limit), events)
