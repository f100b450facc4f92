"""Pause, resume, cancel and archive through the installed ``cadence`` command, on SQLite and
PostgreSQL: what each writes (campaign_states, the audit log, the ledger), what the tick and a
send batch then do, and the errors a marketer can make. The same campaign with a real worker in
the middle of a big send: tests/test_lifecycle_worker.py."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import AuditEntry, CampaignState, Delivery, Enrollment, Subscriber
from cadence.db.session import transaction
from cadence.monitoring.doctor import check_held_campaigns
from cadence.operations import enrollment as engine
from cadence.operations.runtime import Runtime
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import ROOT, cadence_env
from tests.support.keys import TEST_KEYS
from tests.test_cli import START, cadence, one_error_line

CAMPAIGN = "lower-back-pain"


def make_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """Three runners enrolled in a copy of the campaigns folder (so a test may delete the file)."""
    campaigns = tmp_path / "campaigns"
    shutil.copytree(ROOT / "campaigns", campaigns)
    (tmp_path / "clock").write_text(START)
    env = cadence_env(
        tmp_path / "data",
        CADENCE_DATABASE_URL=database_url,
        CADENCE_CAMPAIGNS_DIR=str(campaigns),
        CADENCE_CLOCK=f"file:{tmp_path / 'clock'}",
        COLUMNS="200",
    )
    settings = load_settings(env)
    upgrade(settings.database_url)
    now = datetime.fromisoformat(START)
    with transaction(settings.database_url) as session:
        rows = [SubscriberInput(f"r{i}@example.com", f"R{i}", "America/New_York") for i in range(3)]
        import_subscribers(session, rows, now, keys=TEST_KEYS)
        campaign = Runtime.from_settings(settings).catalog.get(CAMPAIGN)
        engine.enroll(session, campaign, list(session.scalars(select(Subscriber))), now)
    return env


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """On SQLite and on PostgreSQL (the operations' SQL)."""
    return make_env(tmp_path, database_url)


@pytest.fixture
def env1(tmp_path: Path) -> dict[str, str]:
    """On SQLite only: what is tested does not depend on the database."""
    return make_env(tmp_path, f"sqlite:///{tmp_path / 'cadence.db'}")


def runtime_of(env: dict[str, str]) -> Runtime:
    return Runtime.from_settings(load_settings(env))


def send_due(runtime: Runtime) -> engine.TickResult:
    result = engine.tick(runtime)
    for batch in result.batches:
        engine.deliver(runtime, batch)
    return result


def rows(env: dict[str, str]) -> tuple[list[str], list[tuple[str, datetime | None]], list[AuditEntry]]:
    with transaction(load_settings(env).database_url) as session:
        deliveries = sorted(session.scalars(select(Delivery.state)))
        enrollments = [(e.state, e.next_send_at) for e in session.scalars(select(Enrollment))]
        audit = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        session.expunge_all()
    return deliveries, enrollments, audit


def test_pause_holds_everything_and_resume_sends_each_email_once(env: dict[str, str]) -> None:
    ran = cadence(env, "campaigns", "pause", CAMPAIGN, "--json")
    assert ran.status == 0, ran
    assert json.loads(ran.out) | {"message": ""} == {
        "campaign": CAMPAIGN, "action": "pause", "previous": "running", "state": "paused", "changed": True,
        "skipped": 0, "ended": 0, "message": "",
    }  # fmt: skip
    runtime = runtime_of(env)
    held = send_due(runtime)
    assert (held.claimed, held.enqueued, held.held) == (0, 0, {CAMPAIGN: "paused"})
    _, enrollments, audit = rows(env)
    assert all(state == "active" and due is not None for state, due in enrollments)  # they keep their place
    assert [(a.action, a.target, a.actor.startswith("cli:")) for a in audit] == [
        ("campaign.pause", f"campaign:{CAMPAIGN}", True)
    ]
    again = cadence(env, "campaigns", "pause", CAMPAIGN)
    assert again.status == 0 and "already paused" in again.out

    tick = cadence(env, "tick")
    assert tick.status == 0 and f"Not sending {CAMPAIGN}: it is paused; its emails wait." in tick.out, tick

    assert cadence(env, "campaigns", "resume", CAMPAIGN).status == 0
    sent = send_due(runtime)
    assert sent.claimed == 3
    deliveries, _, audit = rows(env)
    assert deliveries == ["sent"] * 3
    assert [a.action for a in audit] == ["campaign.pause", "campaign.resume"]
    assert len(list((Path(env["CADENCE_DATA_DIR"]) / "outbox").rglob("*.eml"))) == 3


def test_a_batch_claimed_before_the_pause_gives_its_rows_back_untouched(env1: dict[str, str]) -> None:
    env = env1
    runtime = runtime_of(env)
    claimed = engine.tick(runtime)
    assert claimed.enqueued == 3
    assert cadence(env, "campaigns", "pause", CAMPAIGN).status == 0
    for batch in claimed.batches:  # the worker got the task before the pause
        outcome = engine.deliver(runtime, batch)
        assert (outcome.sent, outcome.postponed) == (0, 3)
    with transaction(runtime.settings.database_url) as session:
        for delivery in session.scalars(select(Delivery)):
            untouched = (delivery.state, delivery.attempts, delivery.enqueued_at, delivery.last_error)
            assert untouched == ("queued", 0, None, "")
    assert engine.tick(runtime).enqueued == 0  # paused: not enqueued again
    assert cadence(env, "campaigns", "resume", CAMPAIGN).status == 0
    assert send_due(runtime).enqueued == 3
    assert rows(env)[0] == ["sent"] * 3


def test_cancel_skips_queued_emails_ends_enrollments_and_cannot_be_resumed(env: dict[str, str]) -> None:
    runtime = runtime_of(env)
    engine.tick(runtime)  # three emails queued, not sent
    refused = cadence(env, "campaigns", "cancel", CAMPAIGN)  # no terminal, no --yes
    assert refused.status == 2 and "--yes" in one_error_line(refused)
    assert rows(env)[0] == ["queued"] * 3

    ran = cadence(env, "campaigns", "cancel", CAMPAIGN, "--yes", "--json")
    assert ran.status == 0, ran
    assert json.loads(ran.out)["skipped"] == 3 and json.loads(ran.out)["ended"] == 3
    deliveries, enrollments, _ = rows(env)
    assert deliveries == ["skipped"] * 3 and {s for s, _ in enrollments} == {"cancelled"}
    with transaction(runtime.settings.database_url) as session:
        assert set(session.scalars(select(Delivery.last_error))) == {"campaign cancelled"}
    assert send_due(runtime).enqueued == 0

    resumed = cadence(env, "campaigns", "resume", CAMPAIGN)
    assert resumed.status == 1 and "cannot be resumed" in one_error_line(resumed)
    assert [a.action for a in rows(env)[2]] == ["campaign.cancel"]


def test_an_archived_campaign_is_hidden_from_the_list_unless_all(env1: dict[str, str]) -> None:
    env = env1
    assert cadence(env, "campaigns", "cancel", CAMPAIGN, "--yes").status == 0
    assert cadence(env, "campaigns", "archive", CAMPAIGN).status == 0
    listed = cadence(env, "campaigns", "list", "--json")
    assert listed.status == 0 and json.loads(listed.out) == []
    every = json.loads(cadence(env, "campaigns", "list", "--all", "--json").out)
    assert [(c["id"], c["state"], c["enrolled"]) for c in every] == [(CAMPAIGN, "archived", 3)]
    assert every[0]["campaign"] == CAMPAIGN  # the older key, kept for scripts
    assert [a.action for a in rows(env)[2]] == ["campaign.cancel", "campaign.archive"]
    refused = cadence(env, "campaigns", "enroll", CAMPAIGN, "--all")
    assert refused.status == 1 and "archived: nobody can be enrolled" in one_error_line(refused)


def test_archive_refuses_a_campaign_with_people_in_it(env1: dict[str, str]) -> None:
    env = env1
    ran = cadence(env, "campaigns", "archive", CAMPAIGN)
    assert ran.status == 1
    assert "3 active enrollment(s)" in one_error_line(ran) and "cancelled or finished" in one_error_line(ran)
    with transaction(load_settings(env).database_url) as session:
        assert session.scalar(select(CampaignState)) is None and session.scalar(select(AuditEntry)) is None


def test_a_misspelt_campaign_is_refused_with_did_you_mean(env1: dict[str, str]) -> None:
    for args in (["pause", "lower-back-pian"], ["cancel", "lower-back-pian", "--yes"]):
        ran = cadence(env1, "campaigns", *args)
        assert ran.status == 1
        line = one_error_line(ran)
        assert "no campaign 'lower-back-pian'; did you mean 'lower-back-pain'?" in line
        assert "(campaigns: lower-back-pain)" in line


def test_a_missing_campaign_file_holds_its_emails_and_says_so(
    env1: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = env1
    runtime = runtime_of(env)
    first = engine.tick(runtime)  # the tick queued the three first emails ...
    away = tmp_path / "away.yaml"
    (tmp_path / "campaigns" / f"{CAMPAIGN}.yaml").rename(away)  # ... then the file vanished
    for batch in first.batches:
        outcome = engine.deliver(runtime, batch)
        assert (outcome.failed, outcome.postponed) == (0, 3)
    deliveries, enrollments, _ = rows(env)
    assert deliveries == ["queued"] * 3 and {s for s, _ in enrollments} == {"active"}  # not failed, not cancelled

    with caplog.at_level(logging.ERROR, logger="cadence.operations.holds"):
        held = engine.tick(runtime)
        engine.tick(runtime)
    assert held.enqueued == 0 and held.held[CAMPAIGN].startswith("file missing/broken: no campaign")
    logged = [r for r in caplog.records if r.name == "cadence.operations.holds"]
    assert [r.campaign_id for r in logged] == [CAMPAIGN, CAMPAIGN]  # type: ignore[attr-defined]

    status = cadence(env, "campaigns", "status", CAMPAIGN)
    assert status.status == 1 and "held: file missing/broken" in status.out
    assert f"{CAMPAIGN} is held" in one_error_line(status)
    document = json.loads(cadence(env, "campaigns", "status", CAMPAIGN, "--json").out)
    assert document["held"].startswith("file missing/broken") and document["steps"][0]["totals"]["queued"] == 3
    warning = check_held_campaigns(runtime.settings)  # one of `cadence doctor`'s checks
    assert warning.status == "warn" and CAMPAIGN in warning.detail and "file back" in warning.fix

    (tmp_path / "campaigns" / f"{CAMPAIGN}.yaml").write_text("id: [broken\n")  # back, but broken
    assert engine.tick(runtime).held[CAMPAIGN].startswith("file missing/broken: ")
    away.rename(tmp_path / "campaigns" / f"{CAMPAIGN}.yaml")  # back for real: sending goes on
    assert send_due(runtime).enqueued == 3
    assert rows(env)[0] == ["sent"] * 3
    assert cadence(env, "campaigns", "status", CAMPAIGN).status == 0
