"""Signing up with double opt-in: record the signup and its consent, send one confirmation email,
confirm, then join what the form names (a drip, newsletter topics). Plain functions over a
Session; the web page, the JSON API (and any later door) call these.

Rules (and why):

- **Nothing but the confirmation email before confirmation**, and that email never contains
  text the visitor typed (not even the first name): otherwise the form is a relay for spam to
  third parties ("subscription bombing"; M3AAWG, *Sender Best Common Practices* §3.2).
- **At most one confirmation email per address per hour**, enforced on the subscriber row
  (``consent.confirmation_sent_at``) inside the signup transaction, so it holds across web
  processes and restarts without Redis; the row is locked while we decide.
- **No enumeration**: :func:`sign_up` returns what to send (or None) and the caller answers the
  same way whatever happened; new, pending, active, unsubscribed and suppressed addresses are
  indistinguishable from outside. An active subscriber is left untouched: an anonymous form must
  not change a confirmed person's data.
- **Consent record** (GDPR Art. 7(1): be able to demonstrate consent): when, from which IP and
  user agent, on which form and page, which exact wording (version + SHA-256), and when and
  from where it was confirmed. The wording and what a confirmed signup joins come from the
  form file (``campaigns/forms/<form>.yaml``, :mod:`cadence.core.signup_forms`).
- A confirm token carries ``[subscriber_id, signup_id]``, sealed (encrypted, cadence.core.tokens) so
  the link shows no internal id, and dated on the business clock: a link from an older signup,
  one already used, or one older than 7 days cannot (re)subscribe anyone.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.core.signup_forms import ConsentWording, SignupForm
from cadence.core.subscriber_fields import email_key
from cadence.core.suppression_keys import SuppressionKeys
from cadence.core.tokens import make_sealed_token, read_sealed_token
from cadence.db import self_service as store
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.errors import NotFound, TokenError
from cadence.files.catalog import CampaignCatalog
from cadence.operations.enrollment import enroll
from cadence.operations.subscribers import find_suppression, lift_erase_suppression

log = logging.getLogger(__name__)

CONFIRMATION_INTERVAL = timedelta(hours=1)
CONFIRMATION_LINK_AGE = timedelta(days=7)  # measured on the business clock (CADENCE_CLOCK)
_MAX_PREVIOUS = 5  # older consent records kept on a re-signup


class Answers(dict[str, str]):
    """Answers by subscriber attribute, as stored: the strings a CSV import would carry, so
    imported and self-registered subscribers look alike (``True`` → ``"yes"``, None → ``""``).
    What the questions are is the form file's business, not Python's."""

    def __init__(self, values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        def text(value: Any) -> str:
            if isinstance(value, bool):
                return "yes" if value else "no"
            return "" if value is None else str(value)

        super().__init__({key: text(value) for key, value in {**(values or {}), **more}.items()})

    def attributes(self) -> dict[str, str]:
        return dict(self)


@dataclass(frozen=True)
class SignupData:
    """A validated signup: a mailable address, an optional first name, the answers."""

    email: str
    first_name: str
    answers: Answers


@dataclass(frozen=True)
class SignupContext:
    """Where a signup came from (the consent record's evidence), and on which form: its name
    and the exact consent wording shown."""

    ip: str
    user_agent: str
    form_id: str
    page_url: str
    form: str = ""
    consent: ConsentWording | None = None


@dataclass(frozen=True)
class Confirmation:
    """A confirmation email to send: to whom, and the token for ``/confirm/<token>``."""

    subscriber_id: int
    signup_id: str
    email: str
    token: str
    form: str = ""


def sign_up(
    session: Session,
    data: SignupData,
    where: SignupContext,
    now: datetime,
    *,
    secret_key: str,
    keys: SuppressionKeys,
) -> Confirmation | None:
    """Record a signup. Returns the confirmation email to send, or None when nothing may be sent
    (bounced, complained or active address, or one sent to this address within the hour). An
    erased address may sign up again: its suppression is lifted only when the owner confirms."""
    if find_suppression(session, data.email, keys) not in (None, "erased"):
        return None
    subscriber = store.subscriber_by_key(session, email_key(data.email), lock=True)
    if subscriber is not None:
        if subscriber.status not in ("pending", "unsubscribed"):
            return None  # active (leave them alone), bounced or complained (never mail again)
        last = _parse_time(subscriber.consent.get("confirmation_sent_at"))
        if last is not None and now - last < CONFIRMATION_INTERVAL:
            return None
    record = _consent_record(where, now)
    if subscriber is None:
        # Insert, never upsert: if another signup created the row since our SELECT, the UNIQUE
        # email_key fails this flush and record_signup() retries through the checks above.
        subscriber = Subscriber(
            email=data.email,
            email_key=email_key(data.email),
            first_name=data.first_name,
            timezone=None,
            attributes={k: v for k, v in data.answers.attributes().items() if v},
            status="pending",
            source="web",
            created_at=now,
            updated_at=now,
            soft_bounces=0,
            consent=record,
        )
        session.add(subscriber)
    else:
        # Pending or unsubscribed: nothing about the person changes until the address owner
        # confirms (a stranger must not rename someone or change their answers). The answers
        # wait in the consent record of this signup and apply on confirmation.
        record["pending_profile"] = {"first_name": data.first_name, "attributes": data.answers.attributes()}
        subscriber.updated_at = now
        previous = [r for r in subscriber.consent.get("previous", []) if isinstance(r, dict)]
        old = {k: v for k, v in subscriber.consent.items() if k != "previous"}
        history = ([old] if old else []) + previous
        subscriber.consent = {**record, "previous": history[:_MAX_PREVIOUS]}
    session.flush()
    token = make_sealed_token(secret_key, "confirm", [subscriber.id, record["signup_id"]], now)
    return Confirmation(subscriber.id, record["signup_id"], subscriber.email, token, where.form)


def record_signup(
    database_url: str,
    data: SignupData,
    where: SignupContext,
    now: datetime,
    *,
    secret_key: str,
    keys: SuppressionKeys,
) -> Confirmation | None:
    """:func:`sign_up` in its own transaction. Two first signups of one new address at the same
    moment both find no row (there is nothing to lock yet) and both insert; the UNIQUE email_key
    turns the loser's insert into an IntegrityError, and its retry then finds the winner's row,
    locked, already sent: None. (SQLite never gets here: BEGIN IMMEDIATE serialises them.)"""
    for attempt in (1, 2):
        try:
            with transaction(database_url) as session:
                return sign_up(session, data, where, now, secret_key=secret_key, keys=keys)
        except IntegrityError:
            if attempt == 2:
                raise
    return None  # pragma: no cover - the loop returns or raises


def _consent_record(where: SignupContext, now: datetime) -> dict[str, Any]:
    record: dict[str, Any] = {
        "signup_id": secrets.token_urlsafe(12),
        "signed_up_at": now.isoformat(),
        "ip": where.ip,
        "user_agent": where.user_agent[:500],
        "form_id": where.form_id,
        "page_url": where.page_url[:500],
        "wording_version": where.consent.version if where.consent else "",
        "wording_sha256": where.consent.sha256 if where.consent else "",
        "confirmation_sent_at": now.isoformat(),
        "confirmed_at": None,
        "confirmed_ip": None,
        "confirmed_user_agent": None,
    }
    if where.form:
        # The form file decides what confirming joins; its topics are the ones this wording named.
        record["form"] = where.form
        record["topics"] = list(where.consent.topics) if where.consent else []
    return record


def release_confirmation_limit(session: Session, subscriber_id: int, signup_id: str) -> None:
    """The confirmation email could not be sent: let the person try again at once."""
    subscriber = store.subscriber_by_id(session, subscriber_id)
    if subscriber is not None and subscriber.consent.get("signup_id") == signup_id:
        subscriber.consent = {**subscriber.consent, "confirmation_sent_at": None}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def read_confirmation_token(secret_key: str, token: str, now: datetime) -> Any:
    """The payload of a confirmation link opened at business time `now`; TokenError if it is
    not ours, or older than :data:`CONFIRMATION_LINK_AGE`."""
    return read_sealed_token(secret_key, "confirm", token, now, CONFIRMATION_LINK_AGE)


class ConfirmResult(Enum):
    CONFIRMED = "confirmed"
    ALREADY = "already"  # the same link opened again while subscribed: nothing to do


@dataclass(frozen=True)
class Joining:
    """What a confirmed signup joins: a drip to enroll in (None: none, or its file is missing)
    and newsletter topics, recorded with `source` (the form's name)."""

    drip: Campaign | None
    topics: tuple[str, ...] = ()
    source: str = ""


def joining_for(form: SignupForm | None, catalog: CampaignCatalog) -> Joining:
    """What confirming a signup of `form` joins, its drip loaded from `catalog`. A drip whose
    file has gone is logged, not fatal: the person is still confirmed and on the topics."""
    if form is None:
        return Joining(None)
    drip = None
    if form.drip is not None:
        try:
            drip = catalog.get(form.drip)
        except NotFound:
            log.error("campaign %r is missing: confirmed subscribers of form %r are not enrolled", form.drip, form.name)
    return Joining(drip, form.topics, form.name)


def signup_form_name(session: Session, payload: Any) -> str:
    """The form a ``confirm`` token's signup was made on ("" if unknown), so the confirmation
    page can say what is being confirmed."""
    if isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], int):
        subscriber = store.subscriber_by_id(session, payload[0])
        if subscriber is not None and subscriber.consent.get("signup_id") == payload[1]:
            return str(subscriber.consent.get("form") or "")
    return ""


def confirm(
    session: Session,
    payload: Any,
    now: datetime,
    *,
    ip: str,
    user_agent: str,
    keys: SuppressionKeys,
    campaign: Campaign | None = None,
    joins: Callable[[str], Joining] | None = None,
) -> ConfirmResult:
    """Confirm the signup a ``confirm`` token names: status active, consent completed, then join
    what its form names (`joins` maps the form's name to a :class:`Joining`; without it, enroll
    in `campaign`), starting now. TokenError for anything else, with one message for every
    reason (unknown subscriber, older signup, link already used, address suppressed).

    This is the one place an erase suppression is lifted: the owner of the address has just
    proved it and agreed again (a new consent record, GDPR Art. 7(1)). A bounce or complaint
    suppression still refuses the link."""
    invalid = TokenError("this link is not valid")
    if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], int)):
        raise invalid
    subscriber_id, signup_id = payload
    subscriber = store.subscriber_by_id(session, subscriber_id, lock=True)
    if subscriber is None or not signup_id or subscriber.consent.get("signup_id") != signup_id:
        raise invalid
    if subscriber.consent.get("confirmed_at"):
        if subscriber.status == "active":
            return ConfirmResult.ALREADY
        raise invalid  # used, then unsubscribed: only a new signup can resubscribe
    if subscriber.status not in ("pending", "unsubscribed") or not lift_erase_suppression(
        session, subscriber.email, keys
    ):
        raise invalid
    profile = subscriber.consent.get("pending_profile")
    if isinstance(profile, dict):
        subscriber.first_name = str(profile.get("first_name") or subscriber.first_name)
        answers = profile.get("attributes")
        if isinstance(answers, dict):
            subscriber.attributes = {**subscriber.attributes, **answers}
    subscriber.status = "active"
    subscriber.confirmed_at = now
    subscriber.unsubscribed_at = None
    subscriber.updated_at = now
    subscriber.consent = {
        **subscriber.consent,
        "confirmed_at": now.isoformat(),
        "confirmed_ip": ip,
        "confirmed_user_agent": user_agent[:500],
    }
    session.flush()
    joining = joins(str(subscriber.consent.get("form") or "")) if joins is not None else Joining(campaign)
    if joining.topics:
        store.join_topics(session, subscriber.id, joining.topics, now, joining.source)
    if joining.drip is not None:
        enroll(session, joining.drip, [subscriber], now)
    return ConfirmResult.CONFIRMED
