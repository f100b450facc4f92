"""Tables of the staff console's accounts (issue 14): staff users and their server-side sessions.

In a module of their own beside ``models.py`` (same ``Base``, same naming convention) so the
console's tables sit with the one module that writes them, ``db/staff.py``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cadence.db.models import Base, BigId, UTCDateTime


class StaffUser(Base):
    """A person who may use the console. ``role``: ``viewer`` (reads), ``editor`` (also changes
    campaigns, newsletters, subscribers), ``admin`` (also users and erase).

    ``password_hash`` is an Argon2id hash (argon2-cffi; None until the person used their setup
    link). The setup link's token is stored as its SHA-256 only, so a copy of the database
    cannot be turned into a login. ``totp_last_step`` is the last TOTP time step accepted: a
    code is good once (RFC 6238 §5.2 asks the verifier to refuse a replayed code)."""

    __tablename__ = "staff_users"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str | None] = mapped_column(Text)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    setup_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    setup_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StaffSession(Base):
    """One login. ``id`` is the SHA-256 of the cookie's value (the database never holds a usable
    session id). ``stage`` is ``password`` between the password and the TOTP step (such a
    session opens nothing but the TOTP form) and ``full`` after. ``csrf_token`` is the
    synchronizer token every console form carries (OWASP CSRF Prevention Cheat Sheet).
    ``last_seen_at`` drives the idle timeout, ``expires_at`` is the absolute one."""

    __tablename__ = "staff_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(20))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
