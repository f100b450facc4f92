"""The send path's part for transactional deliveries: re-check, rebuild the link, render.

``delivery.prepare_and_send`` calls :func:`prepare_transactional` for the leased ids that are not
drip steps; what it returns is sent, recorded, retried and bounce-mapped by the same code as a
drip email (the same transport, rate limit, DKIM signer, ledger and Message-ID scheme).

The links are rebuilt here, never read from the database (db/transactional.py says why):

- ``confirm``: the sealed ``[subscriber_id, signup_id]`` token of the signup that waits for
  confirmation (``consent.signup_id``), dated now: the 7 days count from the email;
- ``data-link``: a fresh single-use ``[subscriber_id, nonce]`` token, dated now: the email says
  the link works for 30 minutes, and that holds from when it was sent, even after a retry;
- ``manage``: the subscriber's preference link (the same for every email they get).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy.orm import Session

from cadence.core import transactional_mail
from cadence.core.message import build_mime, make_message_id
from cadence.core.sender import Sender
from cadence.core.signup_forms import SignupForm
from cadence.core.tokens import make_sealed_token, make_token
from cadence.core.transactional_mail import TransactionalMessage
from cadence.db.send_batch import suppressed_addresses
from cadence.db.transactional import TransactionalRow, finish_transactional, transactional_rows
from cadence.errors import CadenceError
from cadence.files.forms import choose_default_form, load_forms, load_sender
from cadence.operations.runtime import Runtime
from cadence.operations.send_results import PreparedSend, SendOutcome, composed

__all__ = [
    "prepare_transactional",
]

log = logging.getLogger(__name__)


def prepare_transactional(
    runtime: Runtime, session: Session, delivery_ids: Sequence[int], now: datetime, outcome: SendOutcome
) -> list[PreparedSend]:
    """Leased transactional deliveries in, messages out. Rows that must not go out are marked
    here (``skipped``: see ``transactional_mail.skip_reason``; ``failed``: the sender file is
    broken or the message cannot be built) and counted in `outcome`."""
    rows = transactional_rows(session, delivery_ids)
    if not rows:
        return []
    suppressed = suppressed_addresses(session, [row.email for row in rows])
    settings = runtime.settings
    try:  # read per batch: transactional mail is rare, and an edited file applies at once
        sender = load_sender(settings.sender_file)
        forms = load_forms(settings.forms_dir)
    except CadenceError as exc:
        sender, forms, broken = None, {}, str(exc)
    prepared: list[PreparedSend] = []
    for row in rows:
        if sender is None or row.message not in transactional_mail.MESSAGES:
            error = f"cannot build {row.message!r}: " + (broken if sender is None else "unknown message")
            finish_transactional(session, row.id, "failed", error)
            outcome.failed += 1
            continue
        reason = transactional_mail.skip_reason(
            cast(TransactionalMessage, row.message),
            subscriber_status=row.status,
            suppressed=row.email in suppressed,
            awaiting_confirmation=_awaiting_confirmation(row),
        )
        if reason:
            finish_transactional(session, row.id, "skipped", reason)
            outcome.skipped += 1
            continue
        try:
            prepared.append(_prepare_one(runtime, row, sender, _what(row, forms, settings.default_form), now))
        except CadenceError as exc:  # an address or a sender the message builder refuses
            log.error("delivery %s cannot be built: %s", row.id, exc, extra={"delivery_id": row.id})
            finish_transactional(session, row.id, "failed", f"render: {exc}")
            outcome.failed += 1
    return prepared


def _awaiting_confirmation(row: TransactionalRow) -> bool:
    """The subscriber's latest signup waits for its confirmation (operations/signup.py writes
    the consent record this reads)."""
    return (
        row.status in ("pending", "unsubscribed")
        and bool(row.consent.get("signup_id"))
        and not row.consent.get("confirmed_at")
    )


def _what(row: TransactionalRow, forms: dict[str, SignupForm], default: str) -> str:
    """What the person asked for, in the words of the form they signed up on (the row names it;
    the default form for a signup from before forms were files, or a form since removed)."""
    if row.message != "confirm" or not forms:
        return ""
    form = forms.get(row.form) or choose_default_form(forms, default)
    return form.page.confirm


def _prepare_one(runtime: Runtime, row: TransactionalRow, sender: Sender, what: str, now: datetime) -> PreparedSend:
    settings = runtime.settings
    message = cast(TransactionalMessage, row.message)
    base, key = settings.base_url, settings.secret_key
    if message == "confirm":
        url = f"{base}/confirm/{make_sealed_token(key, 'confirm', [row.subscriber_id, row.consent['signup_id']], now)}"
    elif message == "data-link":
        url = f"{base}/d/{make_sealed_token(key, 'data', [row.subscriber_id, secrets.token_urlsafe(16)], now)}"
    else:
        url = f"{base}/p/{make_token(key, 'preferences', row.subscriber_id)}"
    domain = sender.email.rsplit("@", 1)[1]
    outgoing = transactional_mail.build(
        sender, message, row.email, url, what=what, message_id=make_message_id(row.id, key, domain)
    )
    mime = build_mime(outgoing, date=now, signer=runtime.signer) if runtime.transport.needs_mime else b""
    return PreparedSend(
        delivery_id=row.id,
        lease_token=row.lease_token or "",
        message_id=outgoing.message_id,
        compose=composed(outgoing, mime),  # small, and built where its failure is handled
        step_id=row.message,
        segment_id=row.form,
        content_hash="",
        attempts=row.attempts,
        enrollment_id=None,
        subscriber_email=row.email,
        next_step=0,
        next_send_at=None,
    )
