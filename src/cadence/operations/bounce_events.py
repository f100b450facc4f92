"""Bounces, complaints and unsubscribes that come back, in one vocabulary, applied once.

Every source is turned into :class:`BounceEvent` values and goes through one function::

    bounce mail (maildir, .eml folder, IMAP; cadence.inbound.bounce_mailbox) ─ parse_dsn ─┐
    Postmark / Mailgun webhooks (cadence.web.webhooks) ───────┴─► apply_bounce_events(session, events, now)

Decisions:

- **Once.** An event's ``provider_event_id`` becomes ``Event.dedupe_key`` and is inserted with
  ``ON CONFLICT DO NOTHING`` *before* any effect, in the caller's transaction: a provider retry,
  a file read twice or two web workers racing on the same event change nothing the second time.
- **Hard bounce, complaint** → :func:`cadence.operations.subscribers.suppress` at once.
- **Soft bounce** → ``Subscriber.soft_bounces += 1``, at most once per delivery (Mailgun reports
  every failed attempt of one message), suppressed (``soft_bounce_limit``) when the count
  reaches ``soft_limit``. A later successful send does not reset the count: "sent" means a relay
  or provider accepted the message, which says nothing about the mailbox, so the count is
  "soft bounces ever, one per message".
- **Unsubscribe** → :func:`cadence.operations.subscribers.unsubscribe` (a status, not a suppression).
- **Unknown address** (no subscriber, no delivery of ours) → recorded, nothing suppressed:
  bounces of mail we never sent (backscatter from forged senders) must not grow our list.
- **Which delivery**: only the exact Message-ID we stored, the provider's message id, or a
  delivery id from provider metadata whose subscriber has the reported address.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from cadence.core.subscriber_fields import email_hash, email_key
from cadence.db.enrollments import subscriber_by_email_key
from cadence.db.events import claim_event_key as claim_event_key  # for privacy.py and web/webhooks.py
from cadence.db.events import delivery_by_provider_id, soft_bounce_counted
from cadence.db.models import Delivery, Subscriber
from cadence.monitoring import metrics
from cadence.operations.subscribers import is_suppressed, suppress, unsubscribe

log = logging.getLogger(__name__)

BounceKind = Literal["hard_bounce", "soft_bounce", "complaint", "unsubscribe", "ignored"]


@dataclass(frozen=True, slots=True)
class BounceEvent:
    """One thing a provider or a mail server told us about one address.

    ``provider_event_id`` is unique per event at its source and prefixed by it (``dsn:<Message-ID>``,
    ``postmark:Bounce:<ID>``, ``mailgun:<id>:<timestamp>``). ``delivery_id`` and ``message_id``
    (our Message-ID, or the provider's id of the original message) are hints that
    :func:`apply_bounce_events` checks against the database. ``occurred_at`` is None when the
    source gives no time.
    """

    kind: BounceKind
    email: str
    provider_event_id: str
    delivery_id: int | None = None
    detail: str = ""
    occurred_at: datetime | None = None
    message_id: str | None = None


@dataclass
class ApplyResult:
    applied: int = 0  # events seen for the first time and recorded
    duplicates: int = 0  # already recorded: nothing done
    ignored: int = 0  # auto-replies, delay warnings, events that mean nothing for the list
    suppressed: int = 0  # addresses newly suppressed
    soft_bounces: int = 0  # soft bounces counted on a subscriber
    unsubscribed: int = 0
    unknown: int = 0  # no subscriber for the address: recorded only

    def add(self, other: ApplyResult) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# ---------------------------------------------------------------------------- apply


def apply_bounce_events(
    session: Session, events: Iterable[BounceEvent], now: datetime, *, soft_limit: int
) -> ApplyResult:
    """Apply each event exactly once (see the module docstring). Runs in the caller's transaction."""
    result = ApplyResult()
    for event in events:
        if event.kind == "ignored":
            result.ignored += 1
            continue
        delivery = _find_delivery(session, event)
        subscriber = session.get(Subscriber, delivery.subscriber_id) if delivery else None
        subscriber = subscriber or subscriber_by_email_key(session, email_key(event.email))
        # Checked before this event's own row exists: has this delivery already cost a soft bounce?
        repeat = event.kind == "soft_bounce" and delivery is not None and soft_bounce_counted(session, delivery.id)
        data: dict[str, Any] = {"source": event.provider_event_id.split(":", 1)[0], "detail": event.detail[:500]}
        if subscriber is None:
            data["email_hash"] = email_hash(event.email)  # no readable address for unknown people
        elif email_key(event.email) != subscriber.email_key:
            data["reported_for"] = event.email  # forwarded: the DSN names the final mailbox
        if event.occurred_at is not None:
            data["occurred_at"] = event.occurred_at.isoformat()
        claimed = claim_event_key(
            session,
            dedupe_key(event.provider_event_id),
            kind=event.kind,
            now=now,
            subscriber_id=subscriber.id if subscriber else None,
            delivery_id=delivery.id if delivery else None,
            data=data,
        )
        if not claimed:
            result.duplicates += 1
            continue
        result.applied += 1
        metrics.count_feedback(event.kind)
        if subscriber is None:
            result.unknown += 1
        elif event.kind in ("hard_bounce", "complaint"):
            result.suppressed += _suppress(session, subscriber, event.kind, now, event.detail)
        elif event.kind == "unsubscribe":
            result.unsubscribed += unsubscribe(session, subscriber, now, how=data["source"])
        elif not repeat and not is_suppressed(session, subscriber.email):
            subscriber.soft_bounces = (subscriber.soft_bounces or 0) + 1
            subscriber.updated_at = now
            result.soft_bounces += 1
            if subscriber.soft_bounces >= soft_limit:
                detail = f"{subscriber.soft_bounces} soft bounces; last: {event.detail}"
                result.suppressed += _suppress(session, subscriber, "soft_bounce_limit", now, detail)
    session.flush()
    return result


def dedupe_key(provider_event_id: str) -> str:
    """The ``Event.dedupe_key`` of a provider event (hashed when longer than the column)."""
    key = f"bounce:{provider_event_id}"
    return key if len(key) <= 255 else "bounce:sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _suppress(session: Session, subscriber: Subscriber, reason: str, now: datetime, detail: str) -> int:
    was = is_suppressed(session, subscriber.email)
    suppress(session, subscriber.email, reason, now, detail)
    return 0 if was else 1


# make_message_id (core.message): <d{delivery_id}.{16 hex}@{domain}>
_OUR_MESSAGE_ID = re.compile(r"<d(\d{1,18})\.[0-9a-f]{16}@[^<>\s]+>")


def _find_delivery(session: Session, event: BounceEvent) -> Delivery | None:
    message_id = event.message_id.strip() if event.message_id else ""
    bracketed = message_id if message_id.startswith("<") or not message_id else f"<{message_id}>"
    ours = _OUR_MESSAGE_ID.fullmatch(bracketed)
    for candidate in (int(ours.group(1)) if ours else None, event.delivery_id):
        delivery = session.get(Delivery, candidate) if candidate is not None else None
        if delivery is None:
            continue
        if ours and delivery.message_id == bracketed:  # the id is keyed by our secret: it is ours
            return delivery
        subscriber = session.get(Subscriber, delivery.subscriber_id)
        if subscriber is not None and subscriber.email_key == email_key(event.email):
            return delivery
    if message_id and not ours:
        # Postmark's MessageID is its own; the transport stored it as provider_message_id.
        return delivery_by_provider_id(session, message_id, bracketed)
    return None
