"""Signing up with double opt-in: record the signup and its consent, send one confirmation email,
confirm, enroll in the drip. Plain functions over a Session; the routes are thin shells.

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
  from where it was confirmed.
- A confirm token carries ``[subscriber_id, signup_id]``, sealed (encrypted, cadence.tokens) so
  the link shows no internal id, and dated on the business clock: a link from an older signup,
  one already used, or one older than 7 days cannot (re)subscribe anyone.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.core.message import OutgoingMessage
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.engine import enroll
from cadence.errors import NotFound, TokenError
from cadence.runtime import Runtime
from cadence.subscribers import email_key, find_suppression, lift_erase_suppression
from cadence.suppression_keys import SuppressionKeys
from cadence.tokens import make_sealed_token, read_sealed_token
from cadence.web.emails import send_transactional, transactional_message
from cadence.web.forms import SignupData

log = logging.getLogger(__name__)

SIGNUP_CAMPAIGN = "lower-back-pain"
CONFIRMATION_INTERVAL = timedelta(hours=1)
CONFIRMATION_LINK_AGE = timedelta(days=7)  # measured on the business clock (CADENCE_CLOCK)
_MAX_PREVIOUS = 5  # older consent records kept on a re-signup

# The exact wording shown next to the submit button. Changing it changes the version stored
# with every new signup, so each consent can be traced to the text the person saw.
CONSENT_TEXT = (
    "Yes, email me the free course on lower back pain for runners from Precision Clinical "
    "Bodywork: seven short lessons over about two and a half weeks and a check-in, then occasional "
    "clinic news, about once a month. "
    "Every email has a one-click unsubscribe link."
)


@dataclass(frozen=True)
class ConsentWording:
    text: str
    version: str
    sha256: str


def consent_wording(text: str = CONSENT_TEXT) -> ConsentWording:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return ConsentWording(text=text, version=f"signup-v1-{digest[:12]}", sha256=digest)


CONSENT = consent_wording()


@dataclass(frozen=True)
class SignupContext:
    """Where a signup came from (the consent record's evidence)."""

    ip: str
    user_agent: str
    form_id: str
    page_url: str


@dataclass(frozen=True)
class Confirmation:
    """A confirmation email to send: to whom, and the token for ``/confirm/<token>``."""

    subscriber_id: int
    signup_id: str
    email: str
    token: str


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
    # Lock the row (PostgreSQL) so two simultaneous signups cannot both pass the hourly limit;
    # SQLite's BEGIN IMMEDIATE (cadence.db.session) already serialises writers.
    subscriber = session.scalar(
        select(Subscriber).where(Subscriber.email_key == email_key(data.email)).with_for_update()
    )
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
    return Confirmation(subscriber.id, record["signup_id"], subscriber.email, token)


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
    return {
        "signup_id": secrets.token_urlsafe(12),
        "signed_up_at": now.isoformat(),
        "ip": where.ip,
        "user_agent": where.user_agent[:500],
        "form_id": where.form_id,
        "page_url": where.page_url[:500],
        "wording_version": CONSENT.version,
        "wording_sha256": CONSENT.sha256,
        "confirmation_sent_at": now.isoformat(),
        "confirmed_at": None,
        "confirmed_ip": None,
        "confirmed_user_agent": None,
    }


def release_confirmation_limit(session: Session, subscriber_id: int, signup_id: str) -> None:
    """The confirmation email could not be sent: let the person try again at once."""
    subscriber = session.get(Subscriber, subscriber_id)
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


def confirm(
    session: Session,
    payload: Any,
    now: datetime,
    *,
    ip: str,
    user_agent: str,
    campaign: Campaign | None,
    keys: SuppressionKeys,
) -> ConfirmResult:
    """Confirm the signup a ``confirm`` token names: status active, consent completed, enrolled
    in `campaign` (starting now). TokenError for anything else, with one message for every
    reason (unknown subscriber, older signup, link already used, address suppressed).

    This is the one place an erase suppression is lifted: the owner of the address has just
    proved it and agreed again (a new consent record, GDPR Art. 7(1)). A bounce or complaint
    suppression still refuses the link."""
    invalid = TokenError("this link is not valid")
    if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], int)):
        raise invalid
    subscriber_id, signup_id = payload
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
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
    if campaign is not None:
        enroll(session, campaign, [subscriber], now)
    return ConfirmResult.CONFIRMED


def signup_campaign(runtime: Runtime) -> Campaign | None:
    try:
        return runtime.catalog.get(SIGNUP_CAMPAIGN)
    except NotFound:
        log.error("campaign %r is missing: confirmed subscribers are not enrolled", SIGNUP_CAMPAIGN)
        return None


# ---------------------------------------------------------------------------- the email

_SUBJECT = "Please confirm your email address"
_TEXT = """\
Hello,

Someone, hopefully you, asked us to send the free course "{course}" from {clinic} to this
address: seven short lessons over about two and a half weeks and a check-in, then occasional
clinic news.

To confirm, open this link (it works for 7 days):

{url}

If this wasn't you, ignore this email. We won't write to you again.

{clinic}
{address}
"""


def confirmation_message(campaign: Campaign, to_email: str, confirm_url: str) -> OutgoingMessage:
    """The confirmation email. Only our own text and the link: no visitor-supplied value except
    the address itself, which goes in the envelope and To: without a display name."""
    clinic: dict[str, Any] = campaign.context.get("clinic", {}) if isinstance(campaign.context, dict) else {}
    name = str(clinic.get("name") or campaign.sender_name)
    address = str(clinic.get("postal_address") or "")
    text = _TEXT.format(course=campaign.name, clinic=name, url=confirm_url, address=address)
    html = _html(campaign.name, name, address, confirm_url)
    return transactional_message(campaign, "confirmation", to_email, _SUBJECT, html=html, text=text)


def _html(course: str, clinic: str, address: str, url: str) -> str:
    from markupsafe import escape

    button = (
        f'<a href="{escape(url)}" style="display:inline-block;background:#1d5b63;color:#ffffff;'
        'padding:14px 26px;border-radius:6px;text-decoration:none;font-weight:600">Confirm my address</a>'
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Confirm your email address</title>'
        '</head><body style="margin:0;background:#f3efe8;font-family:-apple-system,Segoe UI,Roboto,Arial,'
        'sans-serif;color:#22303a"><div style="max-width:560px;margin:0 auto;padding:28px;background:#ffffff">'
        f"<p>Hello,</p><p>Someone, hopefully you, asked us to send the free course "
        f"&ldquo;{escape(course)}&rdquo; from {escape(clinic)} to this address: seven short lessons "
        "over about two and a half weeks and a check-in, then occasional clinic news.</p>"
        f"<p>{button}</p><p>The link works for 7 days. If this wasn't you, ignore this email; "
        "we won't write to you again.</p>"
        f'<p style="color:#5b6770;font-size:14px">{escape(clinic)}<br>{escape(address)}</p>'
        "</div></body></html>"
    )


def send_confirmation(runtime: Runtime, confirmation: Confirmation, now: datetime) -> bool:
    """Build and send the confirmation email now. True if the transport accepted it."""
    campaign = signup_campaign(runtime)
    if campaign is None:
        return False
    url = f"{runtime.settings.base_url}/confirm/{confirmation.token}"
    return send_transactional(runtime, confirmation_message(campaign, confirmation.email, url), now)
