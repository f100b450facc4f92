"""Provider webhooks: bounces, spam complaints and unsubscribes from Postmark and Mailgun.

``router`` is included by the web app (``app.include_router(router)``). Each request is
authenticated, parsed into :class:`cadence.operations.bounce_events.BounceEvent` values and applied by
:func:`cadence.operations.bounce_events.apply_bounce_events`, so an event delivered twice is applied once.

``POST /webhooks/postmark``
    Bounce, SpamComplaint and SubscriptionChange webhooks. Postmark authenticates with HTTP Basic
    credentials written into the webhook URL (``https://user:password@host/webhooks/postmark``,
    Postmark docs, "Webhooks overview: Basic HTTP authentication"), checked against
    ``CADENCE_POSTMARK_WEBHOOK_USER`` and ``CADENCE_POSTMARK_WEBHOOK_PASSWORD``.
``POST /webhooks/mailgun``
    Event webhooks (JSON). ``signature.signature`` must be the hex HMAC-SHA256 of
    ``timestamp + token`` keyed by ``CADENCE_MAILGUN_WEBHOOK_SIGNING_KEY`` (Mailgun docs,
    "Securing Webhooks"); the timestamp must be within 5 minutes of our wall clock, and a token
    is accepted once (stored as an ``Event`` row, ``dedupe_key = mailgun-token:<token>``).

Answers: 200 ``{"status": "applied" | "duplicate" | "ignored"}``; 400 malformed body; 401 bad
Basic credentials (Postmark retries, which gives an operator time to fix a rotated password);
403 bad, stale or replayed Mailgun signature; 503 when the variables above are not set.

A replayed Mailgun token gets 403, not 200: Mailgun signs every attempt afresh, so a token seen
twice never comes from Mailgun. Because the HMAC covers only timestamp and token, not the event,
honouring a replayed token would let whoever saw one request post any event for 5 minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.concurrency import run_in_threadpool

from cadence.clock import wall_now
from cadence.config import Settings, get_settings
from cadence.db.session import transaction
from cadence.errors import InputError, TokenError
from cadence.operations.bounce_events import BounceEvent, BounceKind, apply_bounce_events, claim_event_key

# Not in /openapi.json: these endpoints are for two providers, not part of the subscriber API.
router = APIRouter(prefix="/webhooks", tags=["webhooks"], include_in_schema=False)

POSTMARK_USER = "CADENCE_POSTMARK_WEBHOOK_USER"
POSTMARK_PASSWORD = "CADENCE_POSTMARK_WEBHOOK_PASSWORD"
MAILGUN_SIGNING_KEY = "CADENCE_MAILGUN_WEBHOOK_SIGNING_KEY"
MAILGUN_MAX_AGE = timedelta(minutes=5)

# Postmark bounce "Type" (Postmark docs, "Bounce API: bounce types"). Anything not listed
# (AutoResponder, AddressChange, Subscribe, DMARCPolicy - our own DNS -, Unknown...) is ignored.
POSTMARK_BOUNCE_TYPES: dict[str, BounceKind] = {
    "HardBounce": "hard_bounce",
    "BadEmailAddress": "hard_bounce",
    "ManuallyDeactivated": "hard_bounce",
    "SoftBounce": "soft_bounce",
    "Transient": "soft_bounce",
    "DnsError": "soft_bounce",
    "SpamNotification": "soft_bounce",  # refused by a filter: about us more than the mailbox
    "Blocked": "soft_bounce",
    "SpamComplaint": "complaint",
    "Unsubscribe": "unsubscribe",  # an unsubscribe request that came back by email
}
# SubscriptionChange "SuppressionReason" when SuppressSending is true. A reactivation
# (SuppressSending false) is ignored: lifting a suppression at Postmark does not lift ours.
POSTMARK_SUPPRESSION_REASONS: dict[str, BounceKind] = {
    "HardBounce": "hard_bounce",
    "SpamComplaint": "complaint",
    "ManualSuppression": "unsubscribe",
}

# Mailgun "failed" events whose reason says why Mailgun itself did not even try.
MAILGUN_SUPPRESSED_REASONS: dict[str, BounceKind] = {
    "suppress-complaint": "complaint",
    "suppress-unsubscribe": "unsubscribe",
}

_basic = HTTPBasic(auto_error=False, realm="cadence webhooks")


# ---------------------------------------------------------------------------- Postmark


@router.post("/postmark")
async def postmark_webhook(
    request: Request, credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)]
) -> dict[str, str]:
    settings, _ = _context(request)
    user, password = settings.postmark_webhook_user, settings.postmark_webhook_password
    if not user or not password:
        raise HTTPException(503, f"webhook not configured: set {POSTMARK_USER} and {POSTMARK_PASSWORD}")
    given = credentials or HTTPBasicCredentials(username="", password="")
    # Both comparisons always run, in constant time: no hint of which half was wrong.
    user_ok = hmac.compare_digest(given.username.encode(), user.encode())
    password_ok = hmac.compare_digest(given.password.encode(), password.encode())
    if not (user_ok and password_ok):
        raise HTTPException(401, "bad credentials", headers={"WWW-Authenticate": 'Basic realm="cadence webhooks"'})
    try:
        event = postmark_event(_json_object(await request.body()))
    except InputError as exc:
        raise HTTPException(400, str(exc)) from None
    return await run_in_threadpool(_apply, request, event, None)


def postmark_event(payload: Mapping[str, Any]) -> BounceEvent:
    """One Postmark webhook body → BounceEvent (InputError if malformed)."""
    record_type = _text(payload, "RecordType")
    delivery_id = _int_or_none(_mapping(payload.get("Metadata")).get("delivery_id"))
    message_id = str(payload.get("MessageID") or "") or None
    if record_type in ("Bounce", "SpamComplaint"):
        bounce_type = _text(payload, "Type")
        if not isinstance(payload.get("ID"), int | str) or payload.get("ID") == "":
            raise InputError("ID: missing")
        detail = " ".join(f"{bounce_type}: {payload.get('Description') or ''} {payload.get('Details') or ''}".split())
        return BounceEvent(
            POSTMARK_BOUNCE_TYPES.get(bounce_type, "ignored"),
            _text(payload, "Email"),
            f"postmark:{record_type}:{payload['ID']}",
            delivery_id,
            detail,
            _iso(payload.get("BouncedAt")),
            message_id,
        )
    if record_type == "SubscriptionChange":
        recipient = _text(payload, "Recipient")
        reason = str(payload.get("SuppressionReason") or "")
        suppressed = payload.get("SuppressSending") is True
        kind = POSTMARK_SUPPRESSION_REASONS.get(reason, "ignored") if suppressed else "ignored"
        # No event ID in this record: these fields together identify one change.
        fields = [message_id, recipient, payload.get("ChangedAt"), payload.get("SuppressSending"), reason]
        digest = hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:40]
        detail = f"subscription change: {reason or 'reactivated'} ({payload.get('Origin') or 'unknown origin'})"
        when = _iso(payload.get("ChangedAt"))
        event_id = f"postmark:SubscriptionChange:{digest}"
        return BounceEvent(kind, recipient, event_id, delivery_id, detail, when, message_id)
    # Delivery, Open, Click... sent here by a broad webhook setting: nothing to do, no retry wanted.
    return BounceEvent("ignored", "", f"postmark:{record_type}", detail=f"record type {record_type}")


# ---------------------------------------------------------------------------- Mailgun


@router.post("/mailgun")
async def mailgun_webhook(request: Request) -> dict[str, str]:
    key = _context(request)[0].mailgun_webhook_signing_key
    if not key:
        raise HTTPException(503, f"webhook not configured: set {MAILGUN_SIGNING_KEY}")
    try:
        payload = _json_object(await request.body())
        signature, event_data = payload.get("signature"), payload.get("event-data")
        if not isinstance(signature, Mapping) or not isinstance(event_data, Mapping):
            raise InputError("expected a JSON object with 'signature' and 'event-data' objects")
        # Wall time, not the business clock: the signature's freshness is about real replays.
        token = verify_mailgun_signature(key, signature, wall_now())
        event = mailgun_event(event_data)
    except InputError as exc:
        raise HTTPException(400, str(exc)) from None
    except TokenError as exc:
        raise HTTPException(403, str(exc)) from None
    outcome = await run_in_threadpool(_apply, request, event, token)
    if outcome["status"] == "replayed":
        raise HTTPException(403, "signature token already used")
    return outcome


def verify_mailgun_signature(signing_key: str, signature: Mapping[str, Any], now: datetime) -> str:
    """Check a Mailgun ``signature`` block; return its token. ``now`` is wall-clock time (the
    timestamp is Mailgun's real time, whatever clock the drip schedule runs on).

    InputError if a field is missing, TokenError if the HMAC does not match or the timestamp is
    more than 5 minutes away from `now`.
    """
    values = [signature.get(name) for name in ("timestamp", "token", "signature")]
    if not all(isinstance(v, str | int) and str(v) for v in values):
        raise InputError("signature: needs timestamp, token and signature")
    timestamp, token, given = (str(v) for v in values)
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise TokenError("signature does not match")
    try:
        age = now.timestamp() - int(timestamp)
    except ValueError:
        raise TokenError("signature timestamp is not a number") from None
    limit = MAILGUN_MAX_AGE.total_seconds()
    if abs(age) > limit:
        raise TokenError(f"signature timestamp is {int(age)} s from now (limit {int(limit)} s)")
    return token


def mailgun_event(data: Mapping[str, Any]) -> BounceEvent:
    """One Mailgun ``event-data`` object → BounceEvent (InputError if malformed).

    The id is only unique within a day (django-anymail, webhooks/mailgun.py), so the dedupe id
    pairs it with the event's own timestamp, which every retry of that event repeats.
    """
    name = _text(data, "event")
    event_id = f"mailgun:{_text(data, 'id')}:{data.get('timestamp')}"
    kind: BounceKind = "ignored"
    severity, reason = str(data.get("severity") or ""), str(data.get("reason") or "")
    if name == "failed":
        if severity not in ("permanent", "temporary"):
            raise InputError(f"severity: {severity!r} is not permanent or temporary")
        kind = "hard_bounce" if severity == "permanent" else "soft_bounce"
        # Mailgun dropped the message because the address is on its own complaint/unsubscribe list.
        kind = MAILGUN_SUPPRESSED_REASONS.get(reason, kind)
    elif name == "complained":
        kind = "complaint"
    elif name == "unsubscribed":
        kind = "unsubscribe"
    if kind == "ignored":  # delivered, opened, clicked, accepted, rejected...
        return BounceEvent("ignored", str(data.get("recipient") or ""), event_id, detail=f"event {name}")
    status = _mapping(data.get("delivery-status"))
    message_id = str(_mapping(_mapping(data.get("message")).get("headers")).get("message-id") or "")
    words = [name, severity, reason, str(status.get("code") or ""), str(status.get("description") or "")]
    detail = " ".join(" ".join([*words, str(status.get("message") or "")]).split())[:500]
    timestamp = data.get("timestamp")
    return BounceEvent(
        kind,
        _text(data, "recipient"),
        event_id,
        _int_or_none(_mapping(data.get("user-variables")).get("delivery_id")),
        detail,
        _unix_time(timestamp),
        (message_id if message_id.startswith("<") else f"<{message_id}>") if message_id else None,
    )


# ---------------------------------------------------------------------------- shared


def _apply(request: Request, event: BounceEvent, mailgun_token: str | None) -> dict[str, str]:
    settings, clock = _context(request)
    now = clock()
    with transaction(settings.database_url) as session:
        if mailgun_token is not None and not claim_event_key(
            session, f"mailgun-token:{mailgun_token}", kind="webhook_token", now=now
        ):
            return {"status": "replayed"}
        result = apply_bounce_events(session, [event], now, soft_limit=settings.soft_bounce_limit)
    status = "ignored" if result.ignored else "duplicate" if result.duplicates else "applied"
    return {"status": status, "kind": event.kind}


def _context(request: Request) -> tuple[Settings, Callable[[], datetime]]:
    """Settings and business clock of the app (``app.state.cadence``, a web.state.WebState),
    or of the process when the router is mounted on an app without one."""
    state = getattr(request.app.state, "cadence", None)
    settings = getattr(state, "settings", None)
    if not isinstance(settings, Settings):
        settings = get_settings()
        return settings, settings.clock().now
    now = getattr(state, "now", None)
    return settings, now if callable(now) else settings.clock().now


def _json_object(body: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InputError("body must be a JSON object")
    return payload


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name}: missing or not a string")
    return value.strip()


# Ids are BIGINT (63 bits): anything larger cannot be one of ours, and would not even bind as a
# query parameter (OverflowError, a 500 on a signed but malformed event; second review, issue 10).
_MAX_ID = 2**63 - 1


def _int_or_none(value: Any) -> int | None:
    """A plausible row id from a string or integer; None for anything else (the event is then
    matched by Message-ID or recipient)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        number = int(value) if str(value).strip() else None
    except ValueError:
        return None
    return number if number is not None and 0 < number <= _MAX_ID else None


def _unix_time(value: Any) -> datetime | None:
    """The event's Unix time; None when absent, InputError when it is no date at all
    (1e300 or -1e15 overflow datetime: a clear 400, not a 500 that Mailgun retries for hours)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (OverflowError, OSError, ValueError):
        raise InputError("timestamp: not a Unix time within the years 1-9999") from None


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
