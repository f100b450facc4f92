"""Staff console accounts (issue 14) on real SQLite and PostgreSQL: setup links, Argon2id
passwords, login without account enumeration, server-side sessions that expire and are revoked,
TOTP with replay refused; and ``cadence users`` as a script sees it."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select

from cadence.core.bar_chart import bar_chart, nice_ceiling
from cadence.db.audit import recent_audit
from cadence.db.migrate import alembic_config, upgrade
from cadence.db.session import engine_for, transaction
from cadence.db.staff_models import StaffSession, StaffUser
from cadence.errors import InputError, NotFound, TokenError
from cadence.operations import staff_accounts as accounts
from cadence.operations import staff_login as logins

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = accounts.SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=12))
PASSWORD = "correct horse battery"
CADENCE = str(Path(sys.executable).with_name("cadence"))


def make_user(url: str, email: str = "ann@clinic.example", role: str = "editor") -> None:
    with transaction(url) as session:
        link = accounts.add_user(session, email, role, actor="cli:test", now=NOW)
    with transaction(url) as session:
        accounts.complete_setup(session, link.token, PASSWORD, PASSWORD, now=NOW)


def login(url: str, email: str = "ann@clinic.example", password: str = PASSWORD, now: datetime = NOW) -> str | None:
    with transaction(url) as session:
        started = logins.login(session, email, password, now=now, policy=POLICY, ip="203.0.113.9")
    return None if started is None else started.token


def identity(url: str, token: str, now: datetime = NOW) -> accounts.StaffIdentity | None:
    with transaction(url) as session:
        return logins.current_identity(session, token, now=now, policy=POLICY)


def test_a_setup_link_sets_an_argon2id_password_once_and_expires(database_url: str) -> None:
    upgrade(database_url)
    with transaction(database_url) as session:
        link = accounts.add_user(session, " Ann@Clinic.example ", "admin", actor="cli:test", now=NOW)
    assert link.url("https://x.example") == f"https://x.example/admin/setup/{link.token}"
    with transaction(database_url) as session:
        stored = session.scalar(select(StaffUser))
        assert stored is not None and stored.email_key == "ann@clinic.example" and stored.password_hash is None
        assert link.token not in (stored.setup_token_hash or "")  # only its hash is kept
        assert accounts.setup_user(session, link.token, NOW) == "Ann@Clinic.example"
    for password, confirm, problem in (
        ("short", "short", "at least 12"),
        (PASSWORD, PASSWORD + "x", "not the same"),
        ("ann@clinic.example", "ann@clinic.example", "email address"),
        ("x" * 1025, "x" * 1025, "at most 1024"),
    ):
        with pytest.raises(InputError, match=problem), transaction(database_url) as session:
            accounts.complete_setup(session, link.token, password, confirm, now=NOW)
    with transaction(database_url) as session, pytest.raises(TokenError, match="expired"):
        accounts.complete_setup(session, link.token, PASSWORD, PASSWORD, now=NOW + timedelta(hours=73))
    with transaction(database_url) as session:
        accounts.complete_setup(session, link.token, PASSWORD, PASSWORD, now=NOW)
    with transaction(database_url) as session:
        stored = session.scalar(select(StaffUser))
        assert stored is not None and (stored.password_hash or "").startswith("$argon2id$")
    with transaction(database_url) as session, pytest.raises(TokenError, match="not valid"):
        accounts.complete_setup(session, link.token, PASSWORD, PASSWORD, now=NOW)  # spent
    with transaction(database_url) as session, pytest.raises(InputError, match="already has"):
        accounts.add_user(session, "ann@clinic.example", "viewer", actor="cli:test", now=NOW)
    with transaction(database_url) as session, pytest.raises(InputError, match="role"):
        accounts.add_user(session, "bob@clinic.example", "owner", actor="cli:test", now=NOW)
    with transaction(database_url) as session:
        actions = [entry.action for entry in recent_audit(session)]
    assert actions == ["staff.password_set", "staff.user_added"]


def test_migration_0008_goes_down_and_up(database_url: str) -> None:
    upgrade(database_url)
    make_user(database_url)
    config = alembic_config()
    with engine_for(database_url).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    assert not {"staff_users", "staff_sessions"} & set(sa.inspect(engine_for(database_url)).get_table_names())
    upgrade(database_url)
    assert {"staff_users", "staff_sessions"} <= set(sa.inspect(engine_for(database_url)).get_table_names())


def test_login_says_the_same_for_an_unknown_address_a_wrong_password_and_a_disabled_user(database_url: str) -> None:
    upgrade(database_url)
    make_user(database_url)
    make_user(database_url, "gone@clinic.example")
    with transaction(database_url) as session:
        accounts.disable_user(session, "gone@clinic.example", actor="cli:test", now=NOW)
    assert login(database_url, "nobody@clinic.example") is None
    assert login(database_url, password="wrong password here") is None
    assert login(database_url, "gone@clinic.example") is None
    assert login(database_url, "x" * 400) is None
    token = login(database_url, "ANN@clinic.example")
    assert token is not None
    me = identity(database_url, token)
    assert me is not None and me.actor == "user:ann@clinic.example" and me.role == "editor" and me.stage == "full"
    assert me.may("editor") and not me.may("admin")
    with transaction(database_url) as session:
        stored = session.scalars(select(StaffSession)).one()
        assert stored.id != token and len(stored.id) == 64  # the database holds the hash only
        failed = [e.target for e in recent_audit(session) if e.action == "staff.login_failed"]
    assert failed == ["staff:gone@clinic.example", "staff:ann@clinic.example"]  # never the unknown one


def test_an_unknown_address_takes_as_long_as_a_wrong_password() -> None:
    url = "sqlite:///" + str(Path(os.environ.get("TMPDIR", "/tmp")) / f"timing-{os.getpid()}.db")
    upgrade(url)
    try:
        make_user(url)
        timings: dict[str, list[float]] = {"unknown": [], "wrong": []}
        for _ in range(3):
            for kind, email in (("unknown", "nobody@clinic.example"), ("wrong", "ann@clinic.example")):
                started = time.perf_counter()
                assert login(url, email, "not the password") is None
                timings[kind].append(time.perf_counter() - started)
        ratio = statistics.median(timings["unknown"]) / statistics.median(timings["wrong"])
        assert 0.33 < ratio < 3, timings  # both verify one Argon2id hash; without the dummy: ~0.01
    finally:
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)


def test_sessions_end_when_idle_at_their_absolute_limit_and_when_revoked(database_url: str) -> None:
    upgrade(database_url)
    make_user(database_url)
    token = login(database_url)
    assert token is not None
    assert identity(database_url, token, NOW + timedelta(minutes=29)) is not None
    assert identity(database_url, token, NOW + timedelta(minutes=58)) is not None  # used at 29: not idle
    assert identity(database_url, token, NOW + timedelta(minutes=89)) is None  # 31 idle minutes
    assert identity(database_url, token, NOW + timedelta(minutes=90)) is None  # and it stays ended

    token = login(database_url)
    assert token is not None
    for minutes in range(25, 12 * 60, 25):
        assert identity(database_url, token, NOW + timedelta(minutes=minutes)) is not None
    assert identity(database_url, token, NOW + timedelta(hours=12, minutes=1)) is None  # absolute limit

    first, second = login(database_url), login(database_url)
    assert first and second and first != second  # a new id at every login
    me = identity(database_url, first)
    assert me is not None
    with transaction(database_url) as session:
        renewed = logins.change_password(
            session, me, PASSWORD, "another long password", "another long password", now=NOW, policy=POLICY
        )
    assert identity(database_url, first) is None and identity(database_url, second) is None
    assert identity(database_url, renewed.token) is not None
    assert login(database_url) is None and login(database_url, password="another long password")

    with transaction(database_url) as session:
        link = accounts.reset_user(session, "ann@clinic.example", actor="user:admin@clinic.example", now=NOW)
    assert identity(database_url, renewed.token) is None  # a reset ends every session
    assert login(database_url, password="another long password") is None  # and the old password
    with transaction(database_url) as session:
        accounts.complete_setup(session, link.token, PASSWORD, PASSWORD, now=NOW)
    token = login(database_url)
    assert token is not None
    me = identity(database_url, token)
    assert me is not None
    with transaction(database_url) as session:
        logins.logout(session, me, now=NOW)
    assert identity(database_url, token) is None
    with transaction(database_url) as session, pytest.raises(NotFound):
        accounts.disable_user(session, "nobody@clinic.example", actor="cli:test", now=NOW)
    with transaction(database_url) as session, pytest.raises(InputError, match="your own account"):
        accounts.disable_user(session, "ann@clinic.example", actor="user:ann@clinic.example", now=NOW)


def test_totp_needs_a_fresh_code_after_the_password_and_refuses_a_replayed_one(database_url: str) -> None:
    upgrade(database_url)
    make_user(database_url)
    token = login(database_url)
    assert token is not None
    me = identity(database_url, token)
    assert me is not None
    secret = logins.new_totp_secret()
    assert logins.totp_uri(secret, me.email).startswith("otpauth://totp/Cadence:ann%40clinic.example?secret=")
    totp = pyotp.TOTP(secret)
    wrong = "000000" if totp.at(NOW) != "000000" else "111111"
    with transaction(database_url) as session, pytest.raises(InputError, match="code"):
        logins.enable_totp(session, me, secret, wrong, password=PASSWORD, now=NOW)
    with transaction(database_url) as session, pytest.raises(InputError, match="current_password"):
        logins.enable_totp(session, me, secret, totp.at(NOW), password="not the password", now=NOW)
    with transaction(database_url) as session:
        logins.enable_totp(session, me, secret, totp.at(NOW), password=PASSWORD, now=NOW)

    half = login(database_url)
    assert half is not None
    pending = identity(database_url, half)
    assert pending is not None and pending.stage == "password" and not pending.may("viewer")
    with transaction(database_url) as session:
        replayed = logins.verify_totp(session, pending, totp.at(NOW), now=NOW, policy=POLICY)
    assert replayed is None  # that step's code was used to turn TOTP on
    later = NOW + timedelta(seconds=30)
    with transaction(database_url) as session:
        full = logins.verify_totp(session, pending, totp.at(later), now=later, policy=POLICY)
    assert full is not None and full.token != half
    assert identity(database_url, half, later) is None  # the half-way session ended
    after = identity(database_url, full.token, later)
    assert after is not None and after.stage == "full" and after.totp
    with transaction(database_url) as session, pytest.raises(InputError, match="current password"):
        logins.disable_totp(session, after, "not my password", now=later)
    with transaction(database_url) as session:
        logins.disable_totp(session, after, PASSWORD, now=later)
    token = login(database_url, now=later)
    assert token is not None and identity(database_url, token, later).stage == "full"  # type: ignore[union-attr]


def test_the_chart_has_a_round_axis_and_one_bar_per_day() -> None:
    assert [nice_ceiling(n) for n in (0, 1, 3, 7, 10, 11, 260)] == [1, 1, 5, 10, 10, 20, 500]
    chart = bar_chart([(f"2026-11-{d:02d}", d % 4) for d in range(1, 31)])
    assert len(chart.bars) == 30 and [t.value for t in chart.ticks] == [0, 1, 2, 3, 4, 5]
    assert max(b.height for b in chart.bars) == pytest.approx((chart.plot_bottom - 8) * 3 / 5)  # 3 of 5
    assert [label.text for label in chart.labels] == [f"2026-11-{d:02d}" for d in (2, 9, 16, 23, 30)]
    assert all(b.height == 0 for b in bar_chart([("a", 0), ("b", 0)]).bars)
    assert [t.value for t in bar_chart([("a", 260)]).ticks] == [0, 100, 200, 300, 400, 500]


# ------------------------------------------------------------------------------ the command


def cadence(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CADENCE, *args], env=env, capture_output=True, text=True, timeout=60)


def test_cadence_users_add_list_reset_disable_as_a_script_sees_them(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CADENCE_DATA_DIR": str(tmp_path),
        "CADENCE_BASE_URL": "https://news.clinic.example",
        "CADENCE_SECRET_KEY": "a-secret-key-for-this-test-only",
        "CADENCE_CLOCK": "system",
    }
    upgrade(f"sqlite:///{tmp_path / 'cadence.db'}")  # in-process: each `cadence` run costs ~1 s of imports
    added = cadence(env, "users", "add", "ann@clinic.example", "--role", "admin")
    assert added.returncode == 0 and "Added admin ann@clinic.example" in added.stdout, added.stderr
    assert "https://news.clinic.example/admin/setup/" in added.stdout
    as_json = cadence(env, "users", "add", "bob@clinic.example", "--json")
    link = json.loads(as_json.stdout)
    assert link["email"] == "bob@clinic.example" and link["setup_link"].startswith(
        "https://news.clinic.example/admin/setup/"
    )
    reset = json.loads(cadence(env, "users", "reset", "bob@clinic.example", "--json").stdout)
    assert reset["setup_link"] != link["setup_link"]
    disabled = cadence(env, "users", "disable", "bob@clinic.example")
    assert disabled.returncode == 0 and "Disabled bob@clinic.example" in disabled.stdout
    listed = json.loads(cadence(env, "users", "list", "--json").stdout)
    assert [(u["email"], u["role"], u["state"]) for u in listed] == [
        ("ann@clinic.example", "admin", "setup pending"),
        ("bob@clinic.example", "viewer", "disabled"),
    ]
    # Bad input: the operations' own errors are tested above; here, that the command turns them
    # into exit statuses and one line (status 1, one line).
    ran = cadence(env, "users", "disable", "nobody@clinic.example")
    assert ran.returncode == 1 and "no console user" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
