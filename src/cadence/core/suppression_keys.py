"""Keyed hashes for the suppression list: what remains of an erased subscriber (issue 10).

A plain SHA-256 of an address can be tested by anyone holding a list of addresses (hash each,
look for a match), so after an erase (GDPR Art. 17) the suppression row holds an
HMAC-SHA256 of the lowercased address under a key derived from ``CADENCE_SECRET_KEY`` for this
purpose only (``cadence.suppression.v1``): without the secret the row says nothing, and the
secret's other uses (link signatures, sealed tokens) never share a key with it.

Every row says how it was hashed (``suppressions.hash_version``): ``sha256`` for the plain
hash (rows from before issue 10, and the bounce and complaint rows of people still on the list,
whose address the subscribers table holds in clear anyway; the send path checks those), or
``hmac-sha256:<fingerprint>``, naming the key by an 8-hex fingerprint (which reveals nothing
about it). Rotation: set the new ``CADENCE_SECRET_KEY`` and list the old one in
``CADENCE_PREVIOUS_SECRET_KEYS``; lookups try every key, and a row found under an old key is
re-hashed under the current one (subscribers.find_suppression), so the old secret can be
dropped once the rows that matter have been seen again.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cadence.config import Settings

PLAIN = "sha256"
_LABEL = b"cadence.suppression.v1"


def plain_hash(email: str) -> str:
    """SHA-256 of the lowercased address (the ``sha256`` version)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


@dataclass(frozen=True)
class _Key:
    version: str
    key: bytes

    def digest(self, email: str) -> str:
        return hmac.new(self.key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


def _derive(secret_key: str) -> _Key:
    key = hmac.new(secret_key.encode(), _LABEL, hashlib.sha256).digest()
    fingerprint = hashlib.sha256(b"cadence.suppression.fingerprint:" + key).hexdigest()[:8]
    return _Key(f"hmac-sha256:{fingerprint}", key)


@dataclass(frozen=True)
class SuppressionKeys:
    """The current key (new keyed rows) and the keys of earlier secrets (still recognised)."""

    current: _Key
    previous: tuple[_Key, ...] = ()

    @classmethod
    def from_secrets(cls, secret_key: str, previous: Iterable[str] = ()) -> SuppressionKeys:
        return cls(_derive(secret_key), tuple(_derive(old) for old in previous if old != secret_key))

    @classmethod
    def from_settings(cls, settings: Settings) -> SuppressionKeys:
        """``CADENCE_SECRET_KEY`` now, ``CADENCE_PREVIOUS_SECRET_KEYS`` still recognised."""
        return cls.from_secrets(settings.secret_key, settings.previous_secret_keys)

    def keyed(self, email: str) -> tuple[str, str]:
        """(digest, version) under the current key."""
        return self.current.digest(email), self.current.version

    def candidates(self, email: str) -> dict[str, str]:
        """Every digest a row for `email` may hold → its version: current key, older keys, plain."""
        found = {key.digest(email): key.version for key in (self.current, *self.previous)}
        found[plain_hash(email)] = PLAIN
        return found
