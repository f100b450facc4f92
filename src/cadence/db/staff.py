"""The staff console's account SQL: staff users and their sessions (tables in staff_models.py).

Sessions are looked up by the SHA-256 of the cookie value (the primary key), so finding the
session of a request is one indexed read. Revoking is an UPDATE of ``revoked_at`` rather than a
DELETE so the users page can show when and how people last used the console; old rows are
removed by :func:`delete_sessions_ended_before`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from cadence.db.staff_models import StaffSession, StaffUser

__all__ = [
    "StaffSession",
    "StaffUser",
    "add_session",
    "add_user",
    "all_users",
    "delete_sessions_ended_before",
    "find_session",
    "find_user",
    "revoke_sessions",
    "user_by_id",
    "user_by_setup_token",
]


def find_user(session: Session, email_key: str) -> StaffUser | None:
    return session.scalar(select(StaffUser).where(StaffUser.email_key == email_key))


def user_by_id(session: Session, user_id: int, *, lock: bool = False) -> StaffUser | None:
    # lock: a row lock on PostgreSQL (SQLite writes one at a time anyway), for a check-then-write
    # that must not run twice at once: a TOTP step is good once (operations/staff_login.py).
    return session.get(StaffUser, user_id, with_for_update=lock)


def user_by_setup_token(session: Session, token_hash: str) -> StaffUser | None:
    # Row lock on PostgreSQL: two tabs posting the same setup link cannot both set a password.
    query = select(StaffUser).where(StaffUser.setup_token_hash == token_hash).with_for_update()
    return session.scalar(query)


def all_users(session: Session) -> list[StaffUser]:
    return list(session.scalars(select(StaffUser).order_by(StaffUser.email_key)))


def add_user(session: Session, user: StaffUser) -> StaffUser:
    session.add(user)
    session.flush()  # the id, and the UNIQUE(email_key) check, now
    return user


def add_session(session: Session, row: StaffSession) -> None:
    session.add(row)
    session.flush()


def find_session(session: Session, session_hash: str) -> tuple[StaffSession, StaffUser] | None:
    """The session with this id hash and its user, revoked or not (the caller decides)."""
    row = session.execute(
        select(StaffSession, StaffUser)
        .join(StaffUser, StaffUser.id == StaffSession.user_id)
        .where(StaffSession.id == session_hash)
    ).first()
    return None if row is None else (row[0], row[1])


def revoke_sessions(session: Session, user_id: int, now: datetime, *, keep: str | None = None) -> int:
    """End every live session of the user (but `keep`, a session id hash); how many ended."""
    query = update(StaffSession).where(StaffSession.user_id == user_id, StaffSession.revoked_at.is_(None))
    if keep is not None:
        query = query.where(StaffSession.id != keep)
    result = session.execute(query.values(revoked_at=now).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def delete_sessions_ended_before(session: Session, cutoff: datetime) -> int:
    """Forget sessions that were revoked or expired before `cutoff` (housekeeping at login)."""
    query = (
        delete(StaffSession)
        .where(or_(StaffSession.expires_at < cutoff, StaffSession.revoked_at < cutoff))
        .execution_options(synchronize_session=False)
    )
    result = session.execute(query)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
