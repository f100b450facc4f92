"""Signed, opaque tokens for links in emails and pages (itsdangerous).

Each purpose has its own salt, so a token made to confirm a subscription can never be replayed
as an unsubscribe token or a preference-center login (the "purpose" idea of Django's signing
module). Tokens carry ids only, never an email address, so a forwarded link leaks nothing.

Two kinds:

- **Signed** (:func:`make_token`): ids in clear plus an HMAC; for the links in every email
  (unsubscribe, preferences, web view), where speed matters and an id reveals little.
- **Sealed** (:func:`make_sealed_token`): encrypted and authenticated (Fernet: AES-128-CBC +
  HMAC-SHA256), with the issue time inside, read against the *business* clock (``now``), so
  expiry follows ``CADENCE_CLOCK`` like everything else. For the links that expire: the
  confirmation link (7 days, issue 10: its payload no longer shows the subscriber id) and the
  data link for export and erase (30 minutes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from itsdangerous import BadData, SignatureExpired, Signer, URLSafeSerializer, URLSafeTimedSerializer

from cadence.errors import TokenError

if TYPE_CHECKING:  # imported where used: the send path (a worker) never seals a token (issue 15)
    from cryptography.fernet import Fernet

Purpose = Literal["unsubscribe", "preferences", "confirm", "webview", "track"]
SealedPurpose = Literal["confirm", "data"]

# Confirmation links expire (a stale link in an old mailbox should not subscribe anyone);
# unsubscribe and preference links must keep working for as long as the email exists
# (RFC 8058 §3: the URI must work for a reasonable time after the message was sent).
_MAX_AGE: dict[str, int | None] = {"confirm": 7 * 24 * 3600}


def make_token(secret_key: str, purpose: Purpose, payload: Any) -> str:
    if _MAX_AGE.get(purpose):
        return URLSafeTimedSerializer(secret_key, salt=f"cadence.{purpose}").dumps(payload)
    ids = _ids(payload)
    if ids is not None:
        # Ids only (every link in every email): "12-345.<signature>". itsdangerous' Signer alone
        # costs ~4 µs; its JSON serializer (JSON, a zlib attempt, base64) ~13 µs, three times
        # per email (bench/send_throughput.py).
        return f"{ids.decode('ascii')}.{_sign(secret_key, purpose, ids)}"
    return URLSafeSerializer(secret_key, salt=f"cadence.{purpose}").dumps(payload)


def read_token(secret_key: str, purpose: Purpose, token: str) -> Any:
    """The payload of a valid token for `purpose`; TokenError otherwise (one message for every
    kind of bad token, so callers cannot leak which check failed)."""
    max_age = _MAX_AGE.get(purpose)
    try:
        if max_age:
            return URLSafeTimedSerializer(secret_key, salt=f"cadence.{purpose}").loads(token, max_age=max_age)
        if _ID_TOKEN.fullmatch(token):
            ids = [int(i) for i in _signer(secret_key, purpose).unsign(token).decode("ascii").split("-")]
            return ids[0] if len(ids) == 1 else ids
        return URLSafeSerializer(secret_key, salt=f"cadence.{purpose}").loads(token)
    except SignatureExpired as exc:
        raise TokenError("this link has expired") from exc
    except BadData as exc:
        raise TokenError("this link is not valid") from exc


_ID_TOKEN = re.compile(r"[0-9]{1,19}(?:-[0-9]{1,19}){0,3}\.[A-Za-z0-9_-]{20,}")


def _ids(payload: Any) -> bytes | None:
    """``12`` → b"12", ``[12, 345]`` → b"12-345"; None for anything that is not ids."""
    if isinstance(payload, int) and not isinstance(payload, bool) and payload >= 0:
        return str(payload).encode("ascii")
    if (
        isinstance(payload, list)
        and 1 < len(payload) <= 4
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in payload)
    ):
        return "-".join(map(str, payload)).encode("ascii")
    return None


@lru_cache(maxsize=64)
def _signer(secret_key: str, purpose: str) -> Signer:
    return Signer(secret_key, salt=f"cadence.{purpose}")


@lru_cache(maxsize=64)
def _keyed_mac(secret_key: str, purpose: str) -> hmac.HMAC:
    """The Signer's HMAC with its derived key already set: ``.copy()`` of it saves the key
    derivation and HMAC set-up itsdangerous repeats on every ``sign`` (three per email)."""
    signer = _signer(secret_key, purpose)
    return hmac.new(signer.derive_key(), digestmod=signer.digest_method)


def _sign(secret_key: str, purpose: str, value: bytes) -> str:
    """Exactly ``Signer(secret_key, salt=...).get_signature(value)`` (read_token checks it with
    itsdangerous itself); tests/test_tokens.py compares the two."""
    mac = _keyed_mac(secret_key, purpose).copy()
    mac.update(value)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


@lru_cache(maxsize=64)
def _link_mac(secret_key: str) -> hmac.HMAC:
    return hmac.new(secret_key.encode(), digestmod=hashlib.sha256)


def link_signature(secret_key: str, purpose: str, *ids: int) -> str:
    """A short HMAC for high-volume URLs (click and open tracking): ~2 µs instead of the
    ~20 µs of a serializer token, and only ids in the URL. 96 bits resist forgery."""
    mac = _link_mac(secret_key).copy()
    mac.update(f"{purpose}:{':'.join(map(str, ids))}".encode())
    return base64.urlsafe_b64encode(mac.digest()[:12]).decode().rstrip("=")


def check_link_signature(secret_key: str, purpose: str, signature: str, *ids: int) -> bool:
    return hmac.compare_digest(link_signature(secret_key, purpose, *ids), signature)


# ---------------------------------------------------------------------------- sealed tokens


@lru_cache(maxsize=16)
def _fernet(secret_key: str, purpose: str) -> Fernet:
    # A key per purpose, derived from the secret (HMAC-SHA256 as a PRF): a data link can never
    # be read as a confirmation link, and the raw secret is never used as an encryption key.
    from cryptography.fernet import Fernet

    derived = hmac.new(secret_key.encode(), f"cadence.sealed.{purpose}".encode(), hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def make_sealed_token(secret_key: str, purpose: SealedPurpose, payload: Any, now: datetime) -> str:
    """An opaque token for `payload` (JSON-able), issued at business time `now`."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    token = _fernet(secret_key, purpose).encrypt_at_time(data, int(now.timestamp()))
    return token.decode("ascii").rstrip("=")


def read_sealed_token(secret_key: str, purpose: SealedPurpose, token: str, now: datetime, max_age: timedelta) -> Any:
    """The payload of a sealed token for `purpose` issued at most `max_age` before `now`;
    TokenError otherwise ("expired" when only the age is wrong, so the page can say so)."""
    if len(token) > 1000 or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise TokenError("this link is not valid")
    from cryptography.fernet import InvalidToken

    padded = (token + "=" * (-len(token) % 4)).encode("ascii")
    fernet = _fernet(secret_key, purpose)
    current = int(now.timestamp())
    try:
        data = fernet.decrypt_at_time(padded, int(max_age.total_seconds()), current)
    except InvalidToken:
        # Fernet says "invalid" for a forged token and for an old one alike; a second look
        # without the age limit tells them apart (an authentic token: only its age is wrong).
        try:
            issued = fernet.extract_timestamp(padded)
        except InvalidToken:
            raise TokenError("this link is not valid") from None
        if issued + max_age.total_seconds() < current:
            raise TokenError("this link has expired") from None
        raise TokenError("this link is not valid") from None
    try:
        return json.loads(data)
    except ValueError:
        raise TokenError("this link is not valid") from None
