"""Staff console logins (issue 14): password, then the TOTP code if the user turned it on;
server-side sessions with idle and absolute timeouts; password change; the second factor.

The choices and their sources are listed in staff_accounts.py; this module holds the half that
runs at every login and page view.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import pyotp
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from cadence.db import staff as store
from cadence.db.audit import record_audit
from cadence.errors import InputError, NotFound
from cadence.operations.staff_accounts import (
    MAX_PASSWORD,
    TOTP_ISSUER,
    LoginFailed,
    NewSession,
    SessionPolicy,
    StaffIdentity,
    check_new_password,
    dummy_hash,
    password_hasher,
    token_hash,
)


def _start_session(
    session: Session, user: store.StaffUser, stage: str, now: datetime, policy: SessionPolicy, ip: str, agent: str
) -> NewSession:
    token = secrets.token_urlsafe(32)
    store.add_session(
        session,
        store.StaffSession(
            id=token_hash(token),
            user_id=user.id,
            stage=stage,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.absolute,
            ip=ip[:64],
            user_agent=agent[:300],
        ),
    )
    return NewSession(token, stage)


def login(
    session: Session, email: str, password: str, *, now: datetime, policy: SessionPolicy, ip: str = "", agent: str = ""
) -> NewSession | None:
    """Check the password; a new session (stage ``password`` if the user has TOTP, else
    ``full``). None, in the same time, for every way of getting it wrong (an account's failed
    attempt is audited: returned, not raised, so that row commits)."""
    user = store.find_user(session, email.strip().lower()) if len(email) <= 320 else None
    hashed = user.password_hash if user is not None and user.password_hash else dummy_hash()
    ok: bool
    try:
        ok = password_hasher().verify(hashed, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        ok = False
    if user is None or not user.password_hash or user.disabled_at is not None or not ok:
        if user is not None:
            record_audit(
                session,
                actor="anonymous",
                action="staff.login_failed",
                target=f"staff:{user.email_key}",
                detail={"ip": ip[:64]},
                now=now,
            )
        return None
    if password_hasher().check_needs_rehash(user.password_hash):
        user.password_hash = password_hasher().hash(password)
    store.delete_sessions_ended_before(session, now - timedelta(days=30))
    if user.totp_secret:
        return _start_session(session, user, "password", now, policy, ip, agent)
    return _finish_login(session, user, now, policy, ip, agent)


def _finish_login(
    session: Session, user: store.StaffUser, now: datetime, policy: SessionPolicy, ip: str, agent: str
) -> NewSession:
    user.last_login_at = now
    record_audit(
        session,
        actor=f"user:{user.email}",
        action="staff.login",
        target=f"staff:{user.email_key}",
        detail={"ip": ip[:64]},
        now=now,
    )
    return _start_session(session, user, "full", now, policy, ip, agent)


def _accept_totp(user: store.StaffUser, secret: str, code: str, now: datetime) -> bool:
    code = "".join(code.split())
    if not (code.isdigit() and len(code) == 6):
        return False
    totp = pyotp.TOTP(secret)
    for drift in (-1, 0, 1):  # RFC 6238 §5.2: allow one step of clock drift
        step = totp.timecode(now) + drift
        if step > (user.totp_last_step or -1) and secrets.compare_digest(totp.generate_otp(step), code):
            user.totp_last_step = step
            return True
    return False


def verify_totp(
    session: Session,
    identity: StaffIdentity,
    code: str,
    *,
    now: datetime,
    policy: SessionPolicy,
    ip: str = "",
    agent: str = "",
) -> NewSession | None:
    """The second step of a login: the half-way session ends and a new, full one begins.
    None for a wrong or replayed code (audited, and returned rather than raised so the row
    commits). The user row is locked while the code is checked: two logins racing with one code
    would otherwise both read "step unused" (found in a hostile review)."""
    user = store.user_by_id(session, identity.user_id, lock=True)
    if user is None or identity.stage != "password" or not user.totp_secret:
        raise LoginFailed()
    if not _accept_totp(user, user.totp_secret, code, now):
        record_audit(session, actor="anonymous", action="staff.totp_failed", target=f"staff:{user.email_key}", now=now)
        return None
    _end(session, identity.session_hash, now)
    return _finish_login(session, user, now, policy, ip, agent)


def _end(session: Session, session_hash: str, now: datetime) -> None:
    found = store.find_session(session, session_hash)
    if found is not None and found[0].revoked_at is None:
        found[0].revoked_at = now


def current_identity(session: Session, token: str, *, now: datetime, policy: SessionPolicy) -> StaffIdentity | None:
    """Who holds the session cookie `token`; None if it is unknown, revoked, idle too long,
    past its absolute lifetime, or its user is disabled. Marks it used (at most once a minute,
    to spare the database a write per page)."""
    if not token or len(token) > 100:
        return None
    found = store.find_session(session, token_hash(token))
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or user.disabled_at is not None or not user.password_hash:
        return None
    if now >= row.expires_at or now - row.last_seen_at >= policy.idle:
        row.revoked_at = now
        return None
    if now - row.last_seen_at >= timedelta(minutes=1):
        row.last_seen_at = now
    return StaffIdentity(
        user.id, user.email, user.role, row.id, row.csrf_token, row.stage, user.totp_secret is not None
    )


def logout(session: Session, identity: StaffIdentity, *, now: datetime) -> None:
    _end(session, identity.session_hash, now)
    if identity.stage == "full":
        record_audit(
            session, actor=identity.actor, action="staff.logout", target=f"staff:{identity.email.lower()}", now=now
        )


def _check_password(user: store.StaffUser, password: str) -> None:
    try:
        password_hasher().verify(user.password_hash or dummy_hash(), password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        raise InputError("current_password: that is not your current password") from None


def change_password(
    session: Session,
    identity: StaffIdentity,
    current: str,
    new: str,
    confirm: str,
    *,
    now: datetime,
    policy: SessionPolicy,
    ip: str = "",
    agent: str = "",
) -> NewSession:
    """A new password; every session of the user ends, this one included, and a fresh one is
    returned for the browser that made the change."""
    user = store.user_by_id(session, identity.user_id)
    if user is None:
        raise NotFound("your account no longer exists")
    _check_password(user, current)
    check_new_password(new, confirm, user.email)
    user.password_hash = password_hasher().hash(new)
    user.updated_at = now
    store.revoke_sessions(session, user.id, now)
    record_audit(
        session, actor=identity.actor, action="staff.password_changed", target=f"staff:{user.email_key}", now=now
    )
    return _start_session(session, user, "full", now, policy, ip, agent)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app reads (Key Uri Format)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def enable_totp(
    session: Session, identity: StaffIdentity, secret: str, code: str, *, password: str, now: datetime
) -> None:
    """Turn the second factor on with `secret`, once a code from it proves the app has it. The
    current password first, as for turning it off: a session alone must not be enough to put
    someone else's key in the account and lock its owner out (OWASP Authentication Cheat Sheet,
    "re-authentication" before changing a second factor)."""
    user = store.user_by_id(session, identity.user_id)
    if user is None:
        raise NotFound("your account no longer exists")
    _check_password(user, password)
    valid_secret: bool
    try:
        valid_secret = len(secret) == 32 and bool(pyotp.TOTP(secret).now())
    except Exception:  # pyotp raises binascii/ValueError on a malformed base32 secret
        valid_secret = False
    if not valid_secret:
        raise InputError("secret: the setup key was changed; start again")
    if not _accept_totp(user, secret, code, now):
        raise InputError("code: that code is not right; check the time on your phone and try the newest code")
    user.totp_secret = secret
    user.updated_at = now
    record_audit(session, actor=identity.actor, action="staff.totp_enabled", target=f"staff:{user.email_key}", now=now)


def disable_totp(session: Session, identity: StaffIdentity, password: str, *, now: datetime) -> None:
    user = store.user_by_id(session, identity.user_id)
    if user is None:
        raise NotFound("your account no longer exists")
    _check_password(user, password)
    user.totp_secret = None
    user.totp_last_step = None
    user.updated_at = now
    record_audit(session, actor=identity.actor, action="staff.totp_disabled", target=f"staff:{user.email_key}", now=now)
