"""Who may use the staff API, and what staff did: API tokens (issue 13 item 9) and the audit
log (item 8).

A token is ``cad_`` + 32 random bytes (base64url). It is shown once, when made; the database
keeps its SHA-256 only. A fast hash is right here: a password needs a slow hash because people
choose guessable ones, but 256 random bits cannot be guessed, however fast the hash (OWASP
"Password Storage" cheat sheet; GitHub and Stripe tokens are stored the same way).

Scopes are ordered: ``read`` (search, show, export, report, audit) < ``write`` (suppress, tag)
< ``admin`` (erase). The server checks the scope of every request (cadence.web.staff_api).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cadence.db import api_tokens as sql
from cadence.db.audit import recent_audit, record_audit
from cadence.errors import InputError, NotFound

SCOPES = ("read", "write", "admin")
PREFIX = "cad_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    scope: str
    created_at: str
    created_by: str
    revoked_at: str | None
    last_used_at: str | None

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def allows(scope: str, needed: str) -> bool:
    """Whether a token of `scope` may do what needs `needed`."""
    return SCOPES.index(scope) >= SCOPES.index(needed)


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        row.id,
        row.name,
        row.scope,
        row.created_at.isoformat(),
        row.created_by,
        row.revoked_at.isoformat() if row.revoked_at else None,
        row.last_used_at.isoformat() if row.last_used_at else None,
    )


def create_token(session: Session, name: str, scope: str, *, actor: str, now: datetime) -> tuple[str, TokenInfo]:
    """A new token: ``(the token, shown once, its record)``."""
    if not _NAME.match(name):
        raise InputError(f"NAME: {name!r} must be letters, digits, '.', '_' or '-' (up to 100)")
    if scope not in SCOPES:
        raise InputError(f"--scope: {scope!r} is not one of {', '.join(SCOPES)}")
    if sql.by_name(session, name) is not None:
        raise InputError(f"a token named {name!r} exists already (revoke it, or choose another name)")
    token = PREFIX + secrets.token_urlsafe(32)
    row = sql.add_token(session, name=name, token_hash=token_digest(token), scope=scope, created_by=actor, now=now)
    record_audit(session, actor=actor, action="token.add", target=f"token:{name}", detail={"scope": scope}, now=now)
    return token, _info(row)


def list_tokens(session: Session) -> list[TokenInfo]:
    return [_info(row) for row in sql.all_tokens(session)]


def revoke_token(session: Session, name: str, *, actor: str, now: datetime) -> bool:
    """Revoke the token named `name` (NotFound if none). False if it was revoked already."""
    row = sql.by_name(session, name)
    if row is None:
        raise NotFound(f"no token named {name!r}")
    if row.revoked_at is not None:
        return False
    row.revoked_at = now
    record_audit(session, actor=actor, action="token.revoke", target=f"token:{name}", now=now)
    return True


def authenticate(session: Session, presented: str, now: datetime) -> TokenInfo | None:
    """The live token `presented` is, or None. The row is found by the token's digest; the
    digests are then compared in constant time, so no timing difference tells how much of a
    guess was right (hmac.compare_digest)."""
    digest = token_digest(presented)
    row = sql.by_hash(session, digest)
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
        return None
    sql.touch(session, row.id, now)
    return _info(row)


@dataclass(frozen=True)
class AuditRecord:
    at: str
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


def audit_entries(session: Session, *, limit: int = 50, target: str | None = None) -> list[AuditRecord]:
    """The newest entries first (at most `limit`, 1 to 1000), optionally for one target."""
    if not 1 <= limit <= 1000:
        raise InputError("--limit: give 1 to 1000")
    return [
        AuditRecord(e.at.isoformat(), e.actor, e.action, e.target, dict(e.detail))
        for e in recent_audit(session, limit=limit, target=target)
    ]
