"""Staff console accounts (issue 14): users, roles, setup links, password rules. Logins,
sessions and the TOTP second factor are in staff_login.py; the choices of both are listed here.

Every function takes the database session and `now` (the business clock, the same one the CLI
that printed a setup link used, so its expiry means the same thing to both), writes its audit row
in the caller's transaction and raises ours: :class:`LoginFailed` for anything a person at the
login form must not learn more about, InputError naming the field, NotFound, TokenError.

Choices, with their sources:

- Passwords: Argon2id at OWASP's first recommended setting (Password Storage Cheat Sheet:
  m=19 MiB, t=2, p=1), not argon2-cffi's 64 MiB on four lanes: one login must not take both
  cores of a small server (measured here: ~1 s a hash with the default under load). 12 to
  1,024 characters, any characters (NIST SP 800-63B §3.1.1.2: length, not composition rules;
  the upper bound keeps one login from hashing a megabyte).
- Unknown addresses are checked against a dummy hash, so a wrong address costs the same time as
  a wrong password, and both get the same error (no account enumeration; OWASP Authentication
  Cheat Sheet). The per-account and per-IP limits are the web door's (web/console/login.py).
- Setup links: 32 random bytes, stored as SHA-256 only, good for 72 hours and once.
- Sessions: a new random id at every login and after the TOTP step (session fixation, OWASP
  Session Management Cheat Sheet), an idle and an absolute timeout, revoked on logout, password
  change, disable and reset. The cookie holds the id; the database holds its SHA-256.
- TOTP (RFC 6238, pyotp): 30 s steps, one step of clock drift either way, each step good once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from cadence.db import staff as store
from cadence.db.audit import record_audit
from cadence.errors import InputError, NotFound, TokenError

ROLES = ("viewer", "editor", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
SETUP_LINK_LIFETIME = timedelta(hours=72)
MIN_PASSWORD, MAX_PASSWORD = 12, 1024
TOTP_ISSUER = "Cadence"


class LoginFailed(InputError):
    """Wrong address, wrong password, disabled account, wrong code: one message for all."""

    def __init__(self) -> None:
        super().__init__("That email address and password do not match an account.")


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True)
class SetupLink:
    email: str
    token: str
    expires_at: datetime

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/admin/setup/{self.token}"


@dataclass(frozen=True)
class UserSummary:
    id: int
    email: str
    role: str
    state: str  # "active", "disabled", "setup pending"
    totp: bool
    last_login_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class StaffIdentity:
    """Who a request comes from: the console's answer to "logged in as whom, allowed what"."""

    user_id: int
    email: str
    role: str
    session_hash: str
    csrf_token: str
    stage: str  # "password" (waits for the TOTP code) or "full"
    totp: bool

    @property
    def actor(self) -> str:
        return f"user:{self.email}"

    def may(self, role: str) -> bool:
        return self.stage == "full" and _RANK[self.role] >= _RANK[role]


@dataclass(frozen=True)
class NewSession:
    token: str  # goes into the cookie; never stored
    stage: str


def role_allows(role: str, needed: str) -> bool:
    return _RANK[role] >= _RANK[needed]


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _email_key(email: str) -> str:
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in email) or len(email) > 320:
        raise InputError(f"email: {email[:80]!r} is not an email address")
    return email.lower()


def _role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    return role


@lru_cache(maxsize=1)
def password_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)  # Argon2id (the default type)


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    return password_hasher().hash(secrets.token_urlsafe(16))


def _new_setup(user: store.StaffUser, now: datetime) -> SetupLink:
    token = secrets.token_urlsafe(32)
    user.setup_token_hash = token_hash(token)
    user.setup_expires_at = now + SETUP_LINK_LIFETIME
    return SetupLink(user.email, token, now + SETUP_LINK_LIFETIME)


def _existing(session: Session, email: str) -> store.StaffUser:
    user = store.find_user(session, _email_key(email))
    if user is None:
        raise NotFound(f"no console user {email.strip()!r} (see `cadence users list`)")
    return user


# ------------------------------------------------------------------------------ users (admin)


def add_user(session: Session, email: str, role: str, *, actor: str, now: datetime) -> SetupLink:
    """A new console user with no password yet, and the one-time link to choose one."""
    key, role = _email_key(email), _role(role)
    if store.find_user(session, key) is not None:
        raise InputError(
            f"email: {email.strip()} already has a console account (`cadence users role EMAIL ROLE` changes "
            "its role, `cadence users reset EMAIL` gives a new setup link)"
        )
    user = store.StaffUser(email=email.strip(), email_key=key, role=role, created_at=now, updated_at=now)
    link = _new_setup(user, now)
    store.add_user(session, user)
    record_audit(session, actor=actor, action="staff.user_added", target=f"staff:{key}", detail={"role": role}, now=now)
    return link


def change_role(session: Session, email: str, role: str, *, actor: str, now: datetime) -> str:
    """Give the user `role`; returns the role they had. It applies from their next click (each
    request reads the role from the account), so nobody has to log in again. Without it, a first
    user added without --role (a viewer) could not be made admin by anyone."""
    user, role = _existing(session, email), _role(role)
    previous = user.role
    if previous == role:
        return previous
    if actor == f"user:{user.email}" and _RANK[role] < _RANK[previous]:
        raise InputError("role: you cannot lower your own role; ask another admin")
    user.role = role
    user.updated_at = now
    record_audit(
        session,
        actor=actor,
        action="staff.user_role",
        target=f"staff:{user.email_key}",
        detail={"from": previous, "to": role},
        now=now,
    )
    return previous


def reset_user(session: Session, email: str, *, actor: str, now: datetime) -> SetupLink:
    """A new setup link; the old password and second factor stop working and every session of
    the user ends (a reset is for a lost password or phone, or a suspected break-in)."""
    user = _existing(session, email)
    user.password_hash = None
    user.totp_secret = None
    user.totp_last_step = None
    user.disabled_at = None
    user.updated_at = now
    link = _new_setup(user, now)
    store.revoke_sessions(session, user.id, now)
    record_audit(session, actor=actor, action="staff.user_reset", target=f"staff:{user.email_key}", now=now)
    return link


def disable_user(session: Session, email: str, *, actor: str, now: datetime) -> None:
    """The user can no longer log in; their sessions end now. `reset` enables them again."""
    user = _existing(session, email)
    if actor == f"user:{user.email}":  # an admin locking themselves out is never what they meant
        raise InputError("email: you cannot disable your own account; ask another admin")
    user.disabled_at = user.disabled_at or now
    user.setup_token_hash = None
    user.setup_expires_at = None
    user.updated_at = now
    store.revoke_sessions(session, user.id, now)
    record_audit(session, actor=actor, action="staff.user_disabled", target=f"staff:{user.email_key}", now=now)


def list_users(session: Session) -> list[UserSummary]:
    found = []
    for user in store.all_users(session):
        state = "disabled" if user.disabled_at else ("active" if user.password_hash else "setup pending")
        found.append(
            UserSummary(
                user.id, user.email, user.role, state, user.totp_secret is not None, user.last_login_at, user.created_at
            )
        )
    return found


def user_email(session: Session, user_id: int) -> str:
    user = store.user_by_id(session, user_id)
    if user is None:
        raise NotFound(f"no console user with id {user_id}")
    return user.email


# ------------------------------------------------------------------------------ setup links


def setup_user(session: Session, token: str, now: datetime) -> str:
    """The address a setup link is for; TokenError if it is unknown, used or expired."""
    return _setup_target(session, token, now).email


def _setup_target(session: Session, token: str, now: datetime) -> store.StaffUser:
    user = store.user_by_setup_token(session, token_hash(token)) if 20 <= len(token) <= 100 else None
    if user is None or user.disabled_at is not None:
        raise TokenError("this setup link is not valid (it may have been used already)")
    if user.setup_expires_at is None or user.setup_expires_at <= now:
        raise TokenError("this setup link has expired: ask an admin for a new one")
    return user


def check_new_password(password: str, confirm: str, email: str) -> None:
    if password != confirm:
        raise InputError("password: the two passwords are not the same")
    if len(password) < MIN_PASSWORD:
        raise InputError(f"password: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"password: use at most {MAX_PASSWORD} characters")
    if password.strip().lower() == email.strip().lower():
        raise InputError("password: do not use your email address as your password")


def complete_setup(session: Session, token: str, password: str, confirm: str, *, now: datetime) -> str:
    """Set the password a setup link was for (the link is then spent); the user's address."""
    user = _setup_target(session, token, now)
    check_new_password(password, confirm, user.email)
    user.password_hash = password_hasher().hash(password)
    user.setup_token_hash = None
    user.setup_expires_at = None
    user.updated_at = now
    store.revoke_sessions(session, user.id, now)
    record_audit(
        session, actor=f"user:{user.email}", action="staff.password_set", target=f"staff:{user.email_key}", now=now
    )
    return user.email
