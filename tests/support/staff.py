"""A small, known world for the staff tools' tests: four subscribers of lower-back-pain with
their deliveries and events (opens, clicks, a bounce, an unsubscribe, a complaint, a failure),
written straight to the tables as the send path and the trackers would have left them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cadence.db.models import Delivery, Enrollment, Event, Link, Subscriber, SubscriberTag, SubscriberTopic

CAMPAIGN = "lower-back-pain"
T0 = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
LINK_A = "https://precisionbodywork.example/guide/hip-routine"
LINK_B = "https://precisionbodywork.example/book"


def _subscriber(
    session: Session, email: str, name: str, attributes: dict[str, Any], status: str = "active"
) -> Subscriber:
    s = Subscriber(
        email=email,
        email_key=email.lower(),
        first_name=name,
        attributes=attributes,
        timezone="America/New_York",
        status=status,
        source="test",
        created_at=T0,
        updated_at=T0,
        confirmed_at=T0,
        soft_bounces=0,
        consent={"version": "2026-11"},
    )
    session.add(s)
    session.flush()
    return s


def _delivery(
    session: Session, s: Subscriber, e: Enrollment, step: int, segment: str, state: str, at: datetime, error: str = ""
) -> Delivery:
    d = Delivery(
        enrollment_id=e.id,
        subscriber_id=s.id,
        campaign_id=CAMPAIGN,
        step_id=["why-it-hurts", "hips-first"][step],
        step_index=step,
        segment_id=segment,
        state=state,
        attempts=1,
        due_at=at,
        not_before=at,
        message_id="",
        content_hash="",
        last_error=error,
        created_at=at,
        sent_at=at if state == "sent" else None,
    )
    session.add(d)
    session.flush()
    return d


def _event(session: Session, s: Subscriber, d: Delivery | None, kind: str, at: datetime, **data: Any) -> None:
    session.add(Event(subscriber_id=s.id, delivery_id=d.id if d else None, kind=kind, data=data, created_at=at))
    session.flush()


def _enrollment(
    session: Session, s: Subscriber, state: str, next_step: int, next_send_at: datetime | None
) -> Enrollment:
    e = Enrollment(
        subscriber_id=s.id,
        campaign_id=CAMPAIGN,
        state=state,
        next_step=next_step,
        next_send_at=next_send_at,
        enrolled_at=T0,
        end_reason="" if state == "active" else "hard_bounce",
    )
    session.add(e)
    session.flush()
    return e


def seed(session: Session) -> dict[str, int]:
    """Ann (trails, vip): two emails sent, opened (one twice), two links clicked, one of them on
    9 December. Bob: bounced hard. Cy: failed before a segment was chosen. Dee: unsubscribed and
    complained. Returns the link ids by name."""
    links = {}
    for name, url in (("a", LINK_A), ("b", LINK_B)):
        link = Link(url=url, url_hash=name * 64)
        session.add(link)
        session.flush()
        links[name] = link.id
    ann = _subscriber(session, "Ann@Example.com", "Ann", {"terrain": "trails", "training_for_race": "no"})
    session.add(SubscriberTag(subscriber_id=ann.id, tag="vip", created_at=T0))
    session.add(SubscriberTopic(subscriber_id=ann.id, topic="clinic-news", joined_at=T0, source="signup"))
    e = _enrollment(session, ann, "active", 2, T0 + timedelta(days=3))
    d0 = _delivery(session, ann, e, 0, "trail+no-race", "sent", T0)
    _event(session, ann, d0, "open", T0 + timedelta(hours=1))
    _event(session, ann, d0, "open", T0 + timedelta(hours=2))  # a second open of the same email
    _event(session, ann, d0, "click", T0 + timedelta(hours=2), link_id=links["a"], url=LINK_A)
    _event(session, ann, d0, "click", T0 + timedelta(days=2), link_id=links["b"], url=LINK_B)
    d1 = _delivery(session, ann, e, 1, "trail+no-race", "sent", T0 + timedelta(days=1))
    _event(session, ann, d1, "open", T0 + timedelta(days=1, hours=1))

    bob = _subscriber(session, "bob@example.com", "Bob", {"terrain": "road"}, status="bounced")
    e = _enrollment(session, bob, "cancelled", 1, None)
    d = _delivery(session, bob, e, 0, "everyday+no-race", "sent", T0)
    _event(session, bob, d, "hard_bounce", T0 + timedelta(minutes=5), detail="550 5.1.1 no such user")

    cy = _subscriber(session, "cy@example.com", "Cy", {})
    e = _enrollment(session, cy, "active", 0, None)
    _delivery(session, cy, e, 0, "", "failed", T0, error="attempt 1: 550 5.7.1 <cy@example.com>: rejected")

    dee = _subscriber(session, "dee@example.org", "Dee", {"terrain": "road"}, status="unsubscribed")
    e = _enrollment(session, dee, "cancelled", 1, None)
    d = _delivery(session, dee, e, 0, "everyday+no-race", "sent", T0)
    _event(session, dee, d, "unsubscribe", T0 + timedelta(hours=3), how="one-click")
    _event(session, dee, d, "complaint", T0 + timedelta(hours=4))
    return links
