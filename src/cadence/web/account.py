"""What a subscriber can do with the links in their emails: unsubscribe (RFC 8058), change their
answers, pause, see and download their data (GDPR Art. 15 and 20), erase it (Art. 17).

Plain functions over a Session. Tokens are read here so every route treats a bad token, a token
for another purpose and a token naming someone who no longer exists the same way: TokenError.

Export and erase need more than the preference link (issue 10): emails get forwarded, and the
link in a forwarded email must not hand over someone's data or let a stranger erase them. The
preference page offers to email a **data link** to the address on file: sealed (opaque, dated
on the business clock), valid for :data:`DATA_LINK_AGE`, and single-use (its nonce is claimed
as an Event ``dedupe_key`` by the first export or erase, so a second use finds it taken).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cadence.bounces import claim_event_key
from cadence.db.models import Delivery, Enrollment, Event, Subscriber
from cadence.db.session import engine_for
from cadence.engine import record_event
from cadence.errors import InputError, TokenError
from cadence.subscribers import suppress_erased, unsubscribe
from cadence.suppression_keys import SuppressionKeys
from cadence.tokens import make_sealed_token, read_sealed_token, read_token
from cadence.web.forms import PAUSE_WEEKS, Answers

_INVALID = "this link is not valid"
DATA_LINK_AGE = timedelta(minutes=30)

log = logging.getLogger(__name__)


def subscriber_for_preferences(session: Session, secret_key: str, token: str) -> Subscriber:
    """The subscriber a ``preferences`` token names (payload: subscriber id)."""
    subscriber_id = read_token(secret_key, "preferences", token)
    if not isinstance(subscriber_id, int):
        raise TokenError(_INVALID)
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise TokenError(_INVALID)
    return subscriber


def data_link_token(secret_key: str, subscriber: Subscriber, now: datetime) -> str:
    """A fresh data link token for `subscriber`: ``[subscriber_id, nonce]``, sealed at `now`."""
    return make_sealed_token(secret_key, "data", [subscriber.id, secrets.token_urlsafe(16)], now)


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
    subscriber = session.get(Subscriber, payload[0])
    if subscriber is None:
        raise TokenError(_INVALID)
    key = f"data-link:{payload[1]}"
    if use:
        if not claim_event_key(session, key, kind="data_link_used", now=now, subscriber_id=subscriber.id):
            raise TokenError(_INVALID)
    elif session.scalar(select(Event.id).where(Event.dedupe_key == key)) is not None:
        raise TokenError(_INVALID)
    return subscriber


def unsubscribe_token(session: Session, secret_key: str, token: str) -> tuple[Subscriber, int | None]:
    """The subscriber and delivery an ``unsubscribe`` token names (payload:
    ``[subscriber_id, delivery_id]``); the delivery id is None when it no longer exists."""
    payload = read_token(secret_key, "unsubscribe", token)
    if not (isinstance(payload, list) and len(payload) == 2 and all(isinstance(i, int) for i in payload)):
        raise TokenError(_INVALID)
    subscriber = session.get(Subscriber, payload[0])
    if subscriber is None:
        raise TokenError(_INVALID)
    delivery = session.get(Delivery, payload[1])
    return subscriber, (delivery.id if delivery is not None and delivery.subscriber_id == subscriber.id else None)


def unsubscribe_everything(
    session: Session, subscriber: Subscriber, now: datetime, *, how: str, delivery_id: int | None = None
) -> bool:
    """Unsubscribe at once; idempotent. Records an ``unsubscribe`` event (with the delivery it
    came from, for campaign statistics) the first time only. Returns False if already done."""
    changed = unsubscribe(session, subscriber, now, how)
    if changed:
        record_event(session, subscriber, "unsubscribe", now, delivery_id=delivery_id, data={"how": how})
    return changed


def update_answers(session: Session, subscriber: Subscriber, answers: Answers, now: datetime) -> None:
    """Replace the segment answers. Nothing else to do: the send path chooses the segment (and so
    the variant) when each email is sent (sending.py, "check at send time")."""
    subscriber.attributes = {**subscriber.attributes, **answers.attributes()}
    subscriber.updated_at = now
    session.flush()


def pause(session: Session, subscriber: Subscriber, weeks: int, now: datetime) -> datetime:
    """Hold every email for `weeks` (2, 4 or 8); the send path postpones due steps until then."""
    if weeks not in PAUSE_WEEKS:
        raise InputError(f"weeks: choose {', '.join(map(str, PAUSE_WEEKS))}")
    subscriber.paused_until = now + timedelta(weeks=weeks)
    subscriber.updated_at = now
    session.flush()
    return subscriber.paused_until


def resume(session: Session, subscriber: Subscriber, now: datetime) -> None:
    subscriber.paused_until = None
    subscriber.updated_at = now
    session.flush()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_data(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything we hold about the subscriber, as JSON-ready data (GDPR Art. 15 and 20)."""
    deliveries = session.scalars(select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id))
    events = session.scalars(select(Event).where(Event.subscriber_id == subscriber.id).order_by(Event.id))
    enrollments = session.scalars(
        select(Enrollment).where(Enrollment.subscriber_id == subscriber.id).order_by(Enrollment.id)
    )
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
            for e in enrollments
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
            for d in deliveries
        ],
        "events": [
            {"kind": e.kind, "delivery_id": e.delivery_id, "at": _iso(e.created_at), "data": e.data} for e in events
        ],
    }


def erase(session: Session, subscriber: Subscriber, now: datetime, keys: SuppressionKeys) -> None:
    """Erase the subscriber (GDPR Art. 17): first a suppression under a keyed hash, so no import
    can bring the address back and nobody without the secret can test an address against it
    (cadence.suppression_keys), then the row; enrollments, deliveries and their events go with
    it (ON DELETE CASCADE, db/models.py). Only the person's own confirmed signup lifts it."""
    subscriber_id = subscriber.id
    # An earlier bounce or complaint row is re-keyed and loses the provider's text (which
    # often quotes the address): after erasure only the keyed hash remains.
    suppress_erased(session, subscriber.email, now, keys)
    session.expunge(subscriber)
    # Events may point at the subscriber or only at one of their deliveries: both cascade.
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))


def forget_old_pages(database_url: str) -> None:
    """After an erase on SQLite, fold the write-ahead log back into the database and truncate
    it: until then the deleted rows' old pages (with the address) still sit in ``-wal``.
    Best effort: a reader holding an old snapshot keeps its frames until the next checkpoint."""
    if not database_url.startswith("sqlite"):
        return
    raw = engine_for(database_url).raw_connection()  # outside any transaction, as the pragma needs
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
    except sqlite3.OperationalError as exc:
        log.warning("WAL checkpoint after an erase did not run: %s", exc)
    finally:
        raw.close()
