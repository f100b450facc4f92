"""Resuming an enrollment whose next step went out after all (issue 13's "advance" case): the step
after it is timed from that step's actual send, not from the resumption (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from cadence.core.schedule import step_due_at, subscriber_zone
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Enrollment
from cadence.db.session import transaction
from cadence.files.campaigns import find_campaign
from cadence.operations.enrollment import enroll
from cadence.operations.subscribers import upsert_subscriber
from tests.support.cluster import ROOT
from tests.support.keys import TEST_KEYS

NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York


def test_resuming_after_the_step_went_out_times_the_next_step_from_that_send(database_url: str) -> None:
    upgrade(database_url)
    campaign = find_campaign("lower-back-pain", ROOT / "campaigns")
    sent_at = NOW + timedelta(days=2)
    with transaction(database_url) as session:
        person = SubscriberInput("sam@example.com", "Sam", "America/New_York")
        sam = upsert_subscriber(session, person, NOW, keys=TEST_KEYS)
        assert sam is not None
        enroll(session, campaign, [sam], NOW)
        enrollment = session.scalars(select(Enrollment)).one()
        # Step 1 was in flight when Sam unsubscribed; it went out anyway, at `sent_at`.
        enrollment.state, enrollment.next_step, enrollment.next_send_at = "cancelled", 1, None
        session.add(
            Delivery(
                enrollment_id=enrollment.id, subscriber_id=sam.id, campaign_id=campaign.id, step_id="s",
                step_index=1, state="sent", attempts=1, due_at=sent_at, not_before=sent_at, message_id="",
                content_hash="", last_error="", created_at=sent_at, sent_at=sent_at,
            )
        )  # fmt: skip
    back = sent_at + timedelta(hours=1)  # Sam confirms a new signup an hour later
    with transaction(database_url) as session:
        sam = session.merge(sam)
        assert enroll(session, campaign, [sam], back).resumed == 1
        enrollment = session.scalars(select(Enrollment)).one()
        tz = subscriber_zone("America/New_York", campaign)
        expected = step_due_at(campaign, 2, enrolled_at=NOW, previous_sent_at=sent_at, tz=tz)
        assert (enrollment.state, enrollment.next_step) == ("active", 2)
        assert enrollment.next_send_at == expected and expected > back
