"""A subscriber's data: see and download it (GDPR Art. 15 and 20), erase it (Art. 17), and the
single-use **data link** that guards both.

Export and erase need more than the preference link (issue 10): emails get forwarded, and the
link in a forwarded email must not hand over someone's data or let a stranger erase them. The
preference page offers to email a data link to the address on file: sealed (opaque, dated on
the business clock), valid for :data:`DATA_LINK_AGE`, and single-use (its nonce is claimed as an
Event ``dedupe_key`` by the first export or erase, so a second use finds it taken).

:func:`export_data` and :func:`erase` are also the staff tools' (issue 13): same signatures.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cadence.core.suppression_keys import SuppressionKeys
from cadence.core.tokens import read_sealed_token
from cadence.db import self_service as store
from cadence.db.models import Subscriber
from cadence.errors import TokenError
from cadence.operations.bounce_events import claim_event_key
from cadence.operations.subscribers import suppress_erased

_INVALID = "this link is not valid"
DATA_LINK_AGE = timedelta(minutes=30)


def subscriber_for_data_link(session: Session, secret_key: str, token: str, now: datetime, *, use: bool) -> Subscriber:
    """The subscriber a data link names, if it is younger than :data:`DATA_LINK_AGE` at `now`
    and unused. With `use`, the link is spent (in this transaction: if it rolls back, the link
    still works). TokenError otherwise ("expired" when it is only too old)."""
    payload = read_sealed_token(secret_key, "data", token, now, DATA_LINK_AGE)
    if not (
        isinstance(payload, list)
        and len(payload) == 2
        and isinstance(payload[0], int)
        and isinstance(payload[1], str)
        and payload[1]
    ):
        raise TokenError(_INVALID)
    subscriber = store.subscriber_by_id(session, payload[0])
    if subscriber is None:
        raise TokenError(_INVALID)
    key = f"data-link:{payload[1]}"
    if use:
        if not claim_event_key(session, key, kind="data_link_used", now=now, subscriber_id=subscriber.id):
            raise TokenError(_INVALID)
    elif store.event_key_taken(session, key):
        raise TokenError(_INVALID)
    return subscriber


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_data(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything we hold about the subscriber, as JSON-ready data (GDPR Art. 15 and 20)."""
    return {
        "profile": {
            "email": subscriber.email,
            "first_name": subscriber.first_name,
            "attributes": subscriber.attributes,
            "timezone": subscriber.timezone,
            "status": subscriber.status,
            "source": subscriber.source,
            "created_at": _iso(subscriber.created_at),
            "updated_at": _iso(subscriber.updated_at),
            "confirmed_at": _iso(subscriber.confirmed_at),
            "unsubscribed_at": _iso(subscriber.unsubscribed_at),
            "paused_until": _iso(subscriber.paused_until),
            # The newsletter topics they are on (subscriber_topics), with when and from which form.
            "topics": [
                {"topic": t.topic, "joined_at": _iso(t.joined_at), "source": t.source}
                for t in store.topics_of(session, subscriber.id)
            ],
        },
        "consent": subscriber.consent,
        "enrollments": [
            {
                "campaign": e.campaign_id,
                "state": e.state,
                "enrolled_at": _iso(e.enrolled_at),
                "next_step": e.next_step,
                "next_send_at": _iso(e.next_send_at),
                "ended_at": _iso(e.ended_at),
                "end_reason": e.end_reason,
            }
            for e in store.enrollments_of(session, subscriber.id)
        ],
        "deliveries": [
            {
                "id": d.id,
                "campaign": d.campaign_id,
                "step": d.step_id,
                "step_index": d.step_index,
                "segment": d.segment_id,
                "state": d.state,
                "due_at": _iso(d.due_at),
                "sent_at": _iso(d.sent_at),
                "message_id": d.message_id,
            }
            for d in store.deliveries_of(session, subscriber.id)
        ],
        "events": [
            {"kind": e.kind, "delivery_id": e.delivery_id, "at": _iso(e.created_at), "data": e.data}
            for e in store.events_of(session, subscriber.id)
        ],
    }


def erase(session: Session, subscriber: Subscriber, now: datetime, keys: SuppressionKeys) -> None:
    """Erase the subscriber (GDPR Art. 17): first a suppression under a keyed hash, so no import
    can bring the address back and nobody without the secret can test an address against it
    (cadence.core.suppression_keys), then the row; enrollments, deliveries, topics and their events
    go with it (ON DELETE CASCADE, db/models.py). Only the person's own confirmed signup lifts it."""
    # An earlier bounce or complaint row is re-keyed and loses the provider's text (which
    # often quotes the address): after erasure only the keyed hash remains.
    suppress_erased(session, subscriber.email, now, keys)
    store.delete_subscriber(session, subscriber)


def forget_old_pages(database_url: str) -> None:
    """After an erase (its transaction committed), make the deleted rows unreadable on disk too:
    on SQLite the write-ahead log still holds their old pages until a checkpoint."""
    store.checkpoint_sqlite(database_url)
