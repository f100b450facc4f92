"""The send-side operations a person or a timer triggers: enroll, tick, deliver, record an event,
import subscribers, report a campaign's progress (bounce mail: inbound/bounce_mailbox.py, a door
like the webhooks, over operations/bounce_events.py).

The doors call these: ``tasks.py`` (the Celery tasks), ``cli/`` and, through
operations/transactional.py, ``web/``. Each takes its collaborators explicitly: a session (from
db/) or the runtime (settings, clock, catalog, renderer, transport), and the business time
`now` where the caller decides it.

Several are a thin delegation to the module beside it that does the work (enrollment.py,
campaign_progress.py, subscriber_import.py): the
doors need one entry point per operation, and those modules are the send path's own, shared with
the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from cadence.config import Settings
from cadence.core.campaign import Campaign
from cadence.core.suppression_keys import SuppressionKeys
from cadence.db.audit import record_audit
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.errors import InputError, UsageError
from cadence.operations import delivery, enrollment
from cadence.operations.campaign_progress import CampaignStatus
from cadence.operations.campaign_progress import campaign_status as _campaign_status
from cadence.operations.enrollment import EnrollResult, TickResult
from cadence.operations.runtime import Runtime
from cadence.operations.send_results import SendOutcome
from cadence.operations.subscriber_import import ImportReport, import_csv

__all__ = [
    "campaign_status",
    "deliver",
    "enroll",
    "enroll_chosen",
    "import_subscribers",
    "postponed_until",
    "record_event",
    "tick",
]


def enroll(session: Session, campaign: Campaign, subscribers: Sequence[Subscriber], now: datetime) -> EnrollResult:
    """Put active `subscribers` into `campaign` at `now` (``enrollment.enroll``: first step timed
    by core/drip_policy.py; a cancelled enrollment resumes)."""
    return enrollment.enroll(session, campaign, subscribers, now)


def enroll_chosen(
    session: Session,
    campaign: Campaign,
    now: datetime,
    *,
    everyone: bool = False,
    segment: str | None = None,
    emails: Sequence[str] = (),
    actor: str | None = None,
) -> EnrollResult:
    """Enroll exactly one choice of people: every active subscriber, those in `segment` now
    (their answers today, as the send path decides), or the subscribers with `emails`.
    UsageError for none or more than one choice; NotFound for an unknown segment or address."""
    if sum([everyone, segment is not None, bool(emails)]) != 1:
        raise UsageError("give exactly one of --all, --segment S or --email E")
    if segment is not None:
        campaign.segment(segment)  # NotFound names the segment
    if emails:
        result = enrollment.enroll(session, campaign, [enrollment.find_subscriber(session, e) for e in emails], now)
    else:  # everyone, or a segment of everyone: a page at a time (a list can hold millions)
        result = enrollment.enroll_active(session, campaign, now, segment=segment)
    if actor is not None:  # a staff action: in the audit log, like pause and resume (issue 13)
        chosen = "all" if everyone else f"segment {segment}" if segment is not None else f"{len(emails)} address(es)"
        detail = {"chosen": chosen, "enrolled": result.enrolled, "resumed": result.resumed}
        target = f"campaign:{campaign.id}"
        record_audit(session, actor=actor, action="campaign.enroll", target=target, detail=detail, now=now)
    return result


def tick(
    runtime: Runtime, *, enqueue: Callable[[list[int]], None] | None, now: datetime | None = None
) -> TickResult:
    """Claim due enrollments into ledger rows and hand their ids to `enqueue` after each
    round's commit (``enrollment.tick``)."""
    return enrollment.tick(runtime, now=now, enqueue=enqueue)


def postponed_until(runtime: Runtime, delivery_ids: Sequence[int], now: datetime) -> list[datetime]:
    """When the handed-out deliveries that the send path will postpone go out
    (``delivery.postponed_until``): what ``cadence tick`` says of them."""
    return delivery.postponed_until(runtime, delivery_ids, now)


def deliver(runtime: Runtime, delivery_ids: Sequence[int]) -> SendOutcome:
    """Send the given deliveries, drip steps and transactional emails alike (``enrollment.deliver``:
    lease, re-check now, render, send, record). Safe to call twice with the same ids."""
    return enrollment.deliver(runtime, delivery_ids)


def record_event(
    session: Session, subscriber: Subscriber, kind: str, now: datetime, **options: Any
) -> bool:
    """Store an event; an exit goal ends the enrollments it names (``enrollment.record_event``)."""
    return enrollment.record_event(session, subscriber, kind, now, **options)




def import_subscribers(
    database_url: str,
    path: Path,
    now: datetime,
    *,
    keys: SuppressionKeys,
    skip_invalid: bool = False,
    error_report: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    topics: Sequence[str] = (),
    sender_file: Path | None = None,
    actor: str | None = None,
    goals: Sequence[Campaign] = (),
) -> ImportReport:
    """Import a CSV of any size (``subscriber_import.import_csv``: streamed, COPY on PostgreSQL,
    every bad row reported with its line and field; all or nothing unless `skip_invalid`).
    `topics`: newsletter topics of the sender file everyone in the file joins."""
    if topics:
        from cadence.files.forms import load_sender

        known = load_sender(sender_file).topics if sender_file is not None else {}
        for topic in topics:
            if topic not in known:
                raise InputError(f"--topic: no newsletter topic {topic!r} (topics: {', '.join(known) or 'none'})")
    report = import_csv(
        database_url,
        path,
        now,
        keys=keys,
        skip_invalid=skip_invalid,
        error_report=error_report,
        on_progress=on_progress,
        topics=topics,
        goals=goals,
    )
    if actor is not None:  # a staff action: in the audit log (issue 13); a rejected import wrote nothing
        detail = {
            "file": path.name,
            "created": report.created,
            "updated": report.updated,
            "rejected": report.rejected,
            "topics": list(topics),
        }
        with transaction(database_url) as session:
            record_audit(
                session, actor=actor, action="subscribers.import", target="subscribers", detail=detail, now=now
            )
    return report


def campaign_status(settings: Settings, name: str, *, reasons: bool = False) -> CampaignStatus:
    """How far campaign `name` has got: per step and segment, due, queued, sent, failed and
    skipped (drip deliveries only), with the reasons when asked."""
    return _campaign_status(settings, name, reasons=reasons)
