"""Read models for staff: how far a campaign has got, per step and segment."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cadence.catalog import CampaignCatalog
from cadence.config import Settings
from cadence.core.campaign import Campaign
from cadence.core.segments import choose_segment
from cadence.db.models import Delivery, Enrollment, Subscriber
from cadence.db.session import transaction

STATES = ("due", "queued", "sent", "failed")


def campaign_counts(session: Session, campaign: Campaign, now: datetime) -> Counter[tuple[int, str, str]]:
    """Counts keyed by (step index, segment id, state) with state in due/queued/sent/failed.

    Sent and failed deliveries are counted in the segment they were rendered for; pending work
    in the segment the subscriber matches now (the send path decides at send time)."""
    counts: Counter[tuple[int, str, str]] = Counter()
    for step_index, segment_id, state, n in session.execute(
        select(Delivery.step_index, Delivery.segment_id, Delivery.state, func.count())
        .where(Delivery.campaign_id == campaign.id, Delivery.state.in_(("sent", "failed")))
        .group_by(Delivery.step_index, Delivery.segment_id, Delivery.state)
    ):
        counts[(step_index, segment_id, state)] += n
    for step_index, attributes in session.execute(
        select(Delivery.step_index, Subscriber.attributes)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.campaign_id == campaign.id, Delivery.state.in_(("queued", "sending")))
    ):
        counts[(step_index, choose_segment(campaign.segments, attributes, now.date()).id, "queued")] += 1
    for step_index, attributes in session.execute(
        select(Enrollment.next_step, Subscriber.attributes)
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(
            Enrollment.campaign_id == campaign.id,
            Enrollment.state == "active",
            Enrollment.next_send_at.is_not(None),
            Enrollment.next_send_at <= now,
        )
    ):
        counts[(step_index, choose_segment(campaign.segments, attributes, now.date()).id, "due")] += 1
    return counts


def status_table(campaign: Campaign, counts: Counter[tuple[int, str, str]]) -> Table:
    table = Table(title=f"{campaign.name} ({campaign.id})")
    table.add_column("step")
    for segment in campaign.segments:
        table.add_column(segment.name, justify="right")
    table.add_column("total sent", justify="right")
    for index, step in enumerate(campaign.steps):
        cells = []
        for segment in campaign.segments:
            parts = [f"{counts[(index, segment.id, s)]} {s}" for s in STATES if counts[(index, segment.id, s)]]
            cells.append(" · ".join(parts) or "–")
        total = sum(counts[(index, seg.id, "sent")] for seg in campaign.segments)
        table.add_row(f"{index + 1}. {step.id}", *cells, str(total))
    return table


def campaign_status_table(settings: Settings, name: str) -> Table:
    campaign = CampaignCatalog(settings.campaigns_dir).get(name)
    with transaction(settings.database_url) as session:
        counts = campaign_counts(session, campaign, settings.clock().now())
    return status_table(campaign, counts)
