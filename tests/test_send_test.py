"""``cadence campaigns send-test``: one email of a campaign, marked as a test, through the real
configured transport (an aiosmtpd server here), never in the ledger or the results, rate
limited and audit-logged (issue 13)."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.audit import record_audit
from cadence.db.migrate import upgrade
from cadence.db.models import AuditEntry, Delivery, Subscriber
from cadence.db.session import transaction
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import cadence_env
from tests.support.keys import TEST_KEYS
from tests.support.smtpd import SmtpSink
from tests.test_cli import START, cadence, one_error_line

CAMPAIGN = "lower-back-pain"


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, sink: SmtpSink) -> dict[str, str]:
    sink.clear()
    (tmp_path / "clock").write_text(START)
    env = cadence_env(
        tmp_path / "data",
        CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
        CADENCE_CLOCK=f"file:{tmp_path / 'clock'}",
        COLUMNS="200",
    )
    settings = load_settings(env)
    upgrade(settings.database_url)
    with transaction(settings.database_url) as session:
        runner = SubscriberInput("zoe@example.com", "Zoë", "America/New_York", {"terrain": "trails"})
        import_subscribers(session, [runner], datetime.fromisoformat(START), keys=TEST_KEYS)
    return env


def test_a_test_send_arrives_marked_and_leaves_no_ledger_row(env: dict[str, str], sink: SmtpSink) -> None:
    ran = cadence(
        env, "campaigns", "send-test", CAMPAIGN, "--step", "2", "--segment", "Trail runners · no race planned",
        "--to", "me@clinic.example, boss@clinic.example", "--json",
    )  # fmt: skip
    assert ran.status == 0, ran
    result = json.loads(ran.out)
    assert (result["step"], result["segment"], result["data_of"]) == ("hips-first", "trail+no-race", "sample")
    assert result["sent"] == ["me@clinic.example", "boss@clinic.example"] and result["refused"] == {}
    received = sink.wait_for(2)
    assert sorted(m.rcpt_tos[0] for m in received) == ["boss@clinic.example", "me@clinic.example"]
    for message in received:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        assert str(parsed["Subject"]).startswith("[TEST] ") and parsed["X-Cadence-Test"] == "yes"
        assert str(parsed["Message-ID"]).startswith("<test.")
        # Clicking "unsubscribe" in a test email must not unsubscribe anyone.
        assert "example.invalid" in str(parsed["List-Unsubscribe"])
        assert "Jordan" in parsed.get_body(("plain",)).get_content()  # the sample runner
    with transaction(load_settings(env).database_url) as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        [entry] = session.scalars(select(AuditEntry))
        assert (entry.action, entry.target, entry.detail["sent"]) == ("campaign.send_test", f"campaign:{CAMPAIGN}", 2)
        assert entry.actor.startswith("cli:")


def test_a_test_send_can_use_a_subscribers_data_and_segment(env: dict[str, str], sink: SmtpSink) -> None:
    ran = cadence(env, "campaigns", "send-test", CAMPAIGN, "--step", "why-it-hurts", "--subscriber",
                  "zoe@example.com", "--to", "me@clinic.example")  # fmt: skip
    assert ran.status == 0, ran
    assert "trail+no-race" in ran.out and "sent to 1" in ran.out
    [message] = sink.wait_for(1)
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert "Zoë" in parsed.get_body(("plain",)).get_content()


def test_a_test_send_names_the_subscriber_by_id_too(env: dict[str, str], sink: SmtpSink) -> None:
    """As the console's "As this subscriber": the id its subscriber pages show works as well as
    the address; the email is hers (name, segment) and goes only to --to."""
    with transaction(load_settings(env).database_url) as session:
        zoe_id = session.scalar(select(Subscriber.id).where(Subscriber.email == "zoe@example.com"))
    ran = cadence(env, "campaigns", "send-test", CAMPAIGN, "--step", "1", "--subscriber", str(zoe_id),
                  "--to", "me@clinic.example", "--json")  # fmt: skip
    assert ran.status == 0, ran
    result = json.loads(ran.out)
    assert (result["segment"], result["data_of"], result["sent"]) == (
        "trail+no-race", "zoe@example.com", ["me@clinic.example"]
    )
    [message] = sink.wait_for(1)
    assert message.rcpt_tos == ("me@clinic.example",)
    text = email.message_from_bytes(message.data, policy=email.policy.default).get_body(("plain",)).get_content()
    assert "Zoë" in text and "Why the trails make it show" in text  # her name, her segment's paragraph


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--step", "1", "--segment", "trail+race", "--to", ",".join(f"a{i}@x.example" for i in range(21))], 2,
         "--to: 21 addresses, at most 20 per test send"),
        (["--step", "1", "--segment", "trail+race", "--to", "not-an-address"], 1,
         "--to: 'not-an-address' is not a valid email address"),
        (["--step", "9", "--segment", "trail+race", "--to", "me@x.example"], 1,
         "has no step '9' (steps: 1. why-it-hurts"),
        (["--step", "1", "--segment", "trails", "--to", "me@x.example"], 1,
         "has no segment 'trails'; segments: trail+race-soon (Trail runners · race within 8 weeks)"),
        (["--step", "1", "--to", "me@x.example"], 2, "give --segment (one of: trail+race-soon"),
        (["--step", "1", "--subscriber", "nobody@example.com", "--to", "me@x.example"], 1,
         "--subscriber: no subscriber 'nobody@example.com' (give their address or id)"),
        (["--step", "1", "--subscriber", "999999", "--to", "me@x.example"], 1,
         "--subscriber: no subscriber '999999' (give their address or id)"),
    ],
    ids=["too-many", "bad-address", "no-step", "no-segment", "which-segment", "no-subscriber", "no-subscriber-id"],
)
def test_a_bad_test_send_sends_nothing(
    env: dict[str, str], sink: SmtpSink, args: list[str], status: int, message: str
) -> None:
    ran = cadence(env, "campaigns", "send-test", CAMPAIGN, *args)
    assert ran.status == status and message in one_error_line(ran), ran
    assert sink.messages == []


def test_test_sends_are_capped_per_hour(env: dict[str, str], sink: SmtpSink) -> None:
    settings = load_settings(env)
    with transaction(settings.database_url) as session:  # 95 test emails went out 30 minutes ago
        at = datetime.fromisoformat("2026-12-07T12:00:00+00:00")
        record_audit(session, actor="cli:someone", action="campaign.send_test", detail={"sent": 95}, now=at)
    to = ",".join(f"a{i}@x.example" for i in range(10))
    ran = cadence(env, "campaigns", "send-test", CAMPAIGN, "--step", "1", "--segment", "trail+race", "--to", to)
    assert ran.status == 1
    assert "limited to 100 emails per hour; 95 went out in the last hour, so 5 more can go now" in one_error_line(ran)
    assert sink.messages == []
