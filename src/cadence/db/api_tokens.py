"""The SQL of staff API tokens (models.ApiToken): looked up by the SHA-256 of the token, so
the database never holds a usable token and the lookup is one unique-index probe."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cadence.db.models import ApiToken


def by_name(session: Session, name: str) -> ApiToken | None:
    return session.scalar(select(ApiToken).where(ApiToken.name == name))


def by_hash(session: Session, token_hash: str) -> ApiToken | None:
    return session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))


def all_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))


def add_token(session: Session, *, name: str, token_hash: str, scope: str, created_by: str, now: datetime) -> ApiToken:
    token = ApiToken(name=name, token_hash=token_hash, scope=scope, created_at=now, created_by=created_by)
    session.add(token)
    session.flush()
    return token


def touch(session: Session, token_id: int, now: datetime) -> None:
    """Remember when the token was last used (shown by `cadence tokens list`)."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
