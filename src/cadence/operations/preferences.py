"""What a subscriber does from the links in their emails: open their preferences, change their
answers, pause and resume, unsubscribe (RFC 8058), and ask for their preference link by address.

Tokens are read here so every door treats a bad token, a token for another purpose and a token
naming someone who no longer exists the same way: TokenError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.core.subscriber_fields import email_key
from cadence.core.tokens import make_token, read_token
from cadence.db import self_service as store
from cadence.db.models import Subscriber
from cadence.errors import InputError, TokenError
from cadence.operations.enrollment import record_event
from cadence.operations.exit_goals import end_reached_goals
from cadence.operations.subscribers import unsubscribe

_INVALID = "this link is not valid"
PAUSE_WEEKS = (2, 4, 8)


def subscriber_for_preferences(session: Session, secret_key: str, token: str) -> Subscriber:
    """The subscriber a ``preferences`` token names (payload: subscriber id)."""
    subscriber_id = read_token(secret_key, "preferences", token)
    if not isinstance(subscriber_id, int):
        raise TokenError(_INVALID)
    subscriber = store.subscriber_by_id(session, subscriber_id)
    if subscriber is None:
        raise TokenError(_INVALID)
    return subscriber


def preferences_token(secret_key: str, subscriber_id: int) -> str:
    """The token of a subscriber's preference link ``/p/<token>``."""
    return make_token(secret_key, "preferences", subscriber_id)


def unsubscribe_token(session: Session, secret_key: str, token: str) -> tuple[Subscriber, int | None]:
    """The subscriber and delivery an ``unsubscribe`` token names (payload:
    ``[subscriber_id, delivery_id]``); the delivery id is None when it no longer exists."""
    payload = read_token(secret_key, "unsubscribe", token)
    if not (isinstance(payload, list) and len(payload) == 2 and all(isinstance(i, int) for i in payload)):
        raise TokenError(_INVALID)
    subscriber = store.subscriber_by_id(session, payload[0])
    if subscriber is None:
        raise TokenError(_INVALID)
    return subscriber, store.delivery_of(session, payload[1], subscriber.id)


def unsubscribe_everything(
    session: Session, subscriber: Subscriber, now: datetime, *, how: str, delivery_id: int | None = None
) -> bool:
    """Unsubscribe at once; idempotent. Records an ``unsubscribe`` event (with the delivery it
    came from, for campaign statistics) the first time only. Returns False if already done."""
    changed = unsubscribe(session, subscriber, now, how)
    if changed:
        record_event(session, subscriber, "unsubscribe", now, delivery_id=delivery_id, data={"how": how})
    return changed


def update_answers(
    session: Session,
    subscriber: Subscriber,
    answers: Mapping[str, str],
    now: datetime,
    *,
    how: str = "",
    goals: Sequence[Campaign] = (),
) -> None:
    """Replace the answers (by attribute, as :meth:`SignupForm.check_answers` gives them). The
    send path chooses the segment (and so the variant) when each email is sent (operations/delivery.py,
    "check at send time"); what changed is recorded as an ``answers_changed`` event, so the
    staff timeline can tell why the emails changed (issue 13 item 4). An answer that meets a
    drip's exit goal (`goals`: ``exit_goals.goal_campaigns``) ends that drip at once."""
    before = dict(subscriber.attributes or {})
    changes = {
        key: {"from": before.get(key), "to": value} for key, value in answers.items() if before.get(key) != value
    }
    subscriber.attributes = {**before, **answers}
    subscriber.updated_at = now
    if changes:
        record_event(session, subscriber, "answers_changed", now, data={"changes": changes, "how": how})
    session.flush()
    if changes:
        end_reached_goals(session, goals, [subscriber.id], now, answers_changed=True)


def pause(session: Session, subscriber: Subscriber, weeks: int, now: datetime, *, how: str = "") -> datetime:
    """Hold every email for `weeks` (2, 4 or 8); the send path postpones due steps until then.
    Recorded as a ``pause`` event (the timeline shows it)."""
    if weeks not in PAUSE_WEEKS:
        raise InputError(f"weeks: choose {', '.join(map(str, PAUSE_WEEKS))}")
    subscriber.paused_until = now + timedelta(weeks=weeks)
    subscriber.updated_at = now
    until = subscriber.paused_until.isoformat()
    record_event(session, subscriber, "pause", now, data={"weeks": weeks, "until": until, "how": how})
    session.flush()
    return subscriber.paused_until


def resume(session: Session, subscriber: Subscriber, now: datetime, *, how: str = "") -> None:
    """End a pause now; a ``resume`` event when there was one to end (resuming twice is one)."""
    was = subscriber.paused_until
    subscriber.paused_until = None
    subscriber.updated_at = now
    if was is not None and was > now:
        record_event(session, subscriber, "resume", now, data={"was_paused_until": was.isoformat(), "how": how})
    session.flush()


def manageable_subscriber(session: Session, address: str) -> Subscriber | None:
    """The subscriber ``/manage`` may email a preference link to: only people who confirmed
    once (active or unsubscribed); a pending address never agreed to hear from us."""
    subscriber = store.subscriber_by_key(session, email_key(address))
    return subscriber if subscriber is not None and subscriber.status in ("active", "unsubscribed") else None
