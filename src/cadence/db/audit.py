"""The audit log's SQL: one row per staff action (models.AuditEntry says what goes in it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cadence.db.models import AuditEntry


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    now: datetime,
) -> None:
    """Add one audit row in the caller's transaction, so the action and its record commit (or
    roll back) together: an action that failed leaves no entry claiming it happened."""
    session.add(AuditEntry(at=now, actor=actor[:200], action=action[:60], target=target[:200], detail=detail or {}))


def recent_audit(session: Session, *, limit: int = 100, target: str | None = None) -> list[AuditEntry]:
    """The newest entries first, optionally for one target ("campaign:lower-back-pain")."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    return list(session.scalars(query))
