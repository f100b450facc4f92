"""Signed, opaque tokens for links in emails and pages (itsdangerous).

Each purpose has its own salt, so a token made to confirm a subscription can never be replayed
as an unsubscribe token or a preference-center login (the "purpose" idea of Django's signing
module). Tokens carry ids only, never an email address, so a forwarded link leaks nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from functools import lru_cache
from typing import Any, Literal

from itsdangerous import BadData, SignatureExpired, Signer, URLSafeSerializer, URLSafeTimedSerializer

from cadence.errors import TokenError

Purpose = Literal["unsubscribe", "preferences", "confirm", "webview", "track"]

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
