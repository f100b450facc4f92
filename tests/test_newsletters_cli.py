"""``cadence newsletters ...`` as a marketer or a script runs it: the installed command in a
subprocess, exit statuses 0/1/2, one error line, JSON for scripts, help in plain words, and a
test send through a real SMTP server that leaves no trace in the ledger."""

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
from cadence.db.migrate import upgrade
from cadence.db.models import AuditEntry, Delivery, Subscriber, SubscriberTopic
from cadence.db.session import transaction
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import cadence_env
from tests.support.keys import TEST_KEYS
from tests.support.smtpd import SmtpSink
from tests.test_cli import cadence, one_error_line

START = datetime.fromisoformat("2027-01-05T12:00:00+00:00")
NEWSLETTER = "clinic-news-2027-01"


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink) -> dict[str, str]:
    """A SQLite database with four readers of the clinic news (one in Paris) and one who is not."""
    root = tmp_path_factory.mktemp("newsletters-cli")
    (root / "clock").write_text(START.isoformat())
    env = cadence_env(
        root / "data",
        CADENCE_CLOCK=f"file:{root / 'clock'}",
        CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
        COLUMNS="200",
    )
    settings = load_settings(env)
    upgrade(settings.database_url)
    with transaction(settings.database_url) as session:
        zones = ["Europe/Paris", None, None, None, None]
        rows = [SubscriberInput(f"r{i}@example.com", f"R{i}", zone) for i, zone in enumerate(zones)]
        import_subscribers(session, rows, START, keys=TEST_KEYS)
        for person in session.scalars(select(Subscriber).where(Subscriber.email != "r4@example.com")):
            session.add(SubscriberTopic(subscriber_id=person.id, topic="clinic-news", joined_at=START))
    return env


def deliveries(env: dict[str, str]) -> int:
    with transaction(load_settings(env).database_url) as session:
        return int(session.scalar(select(func.count()).select_from(Delivery)) or 0)


def test_every_command_explains_itself_to_a_marketer(env: dict[str, str]) -> None:
    ran = cadence(env, "newsletters", "--help")
    assert ran.status == 0
    for command in ("audience", "schedule", "pause", "resume", "cancel", "list", "status", "preview", "send-test"):
        assert command in ran.out
    assert "each reader" in cadence(env, "newsletters", "schedule", "--help").out


def test_check_count_schedule_and_follow_a_newsletter(env: dict[str, str], tmp_path: Path) -> None:
    ran = cadence(env, "campaigns", "validate", NEWSLETTER)
    assert ran.status == 0 and "newsletter valid" in ran.out, ran
    preview = cadence(env, "newsletters", "preview", NEWSLETTER, "--out", str(tmp_path / "p"))
    assert preview.status == 0 and (tmp_path / "p" / "index.html").is_file()
    page = next(p for p in (tmp_path / "p").glob("*.html") if p.name != "index.html").read_text()
    assert "Hills, hips and your low back" in page and "Clinic news for runners" in page

    counted = json.loads(cadence(env, "newsletters", "audience", NEWSLETTER, "--json").out)
    assert counted["total"] == 4 and counted["segments_of"] == "lower-back-pain"

    scheduled = cadence(env, "newsletters", "schedule", NEWSLETTER, "--json")
    assert scheduled.status == 0, scheduled
    document = json.loads(scheduled.out)
    assert document["recipients"] == 4
    assert (document["first_due"], document["last_due"]) == ("2027-01-12T08:00:00+00:00", "2027-01-12T14:00:00+00:00")
    again = cadence(env, "newsletters", "schedule", NEWSLETTER)
    assert "Scheduled clinic-news-2027-01 for 4 reader(s), between 2027-01-12 08:00 UTC and" in again.out
    assert deliveries(env) == 4  # scheduled twice, one row per reader

    assert "is paused" in cadence(env, "newsletters", "pause", NEWSLETTER).out
    status = json.loads(cadence(env, "newsletters", "status", NEWSLETTER, "--json").out)
    assert (status["state"], status["waiting"], status["sent"]) == ("paused", 4, 0)
    assert "is scheduled" in cadence(env, "newsletters", "resume", NEWSLETTER).out
    listed = json.loads(cadence(env, "newsletters", "list", "--json").out)
    assert [(n["id"], n["state"], n["recipients"]) for n in listed] == [(NEWSLETTER, "scheduled", 4)]
    assert "4 unsent email(s) will never be sent" in cadence(env, "newsletters", "cancel", NEWSLETTER, "--yes").out
    with transaction(load_settings(env).database_url) as session:
        audit = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [a.action for a in audit] == [
        f"newsletter.{a}" for a in ("schedule", "schedule", "pause", "resume", "cancel")
    ]
    assert all(a.actor.startswith("cli:") and a.target == f"newsletter:{NEWSLETTER}" for a in audit)


BAD = [
    (["newsletters", "schedule"], 2, "Missing argument 'name'"),
    (["newsletters", "send-test", NEWSLETTER], 2, "Missing option '--to'"),
    (["newsletters", "status", "nosuch"], 1, "no newsletter 'nosuch'"),
    (["newsletters", "schedule", NEWSLETTER, "--at", "next tuesday"], 1, "--at: 'next tuesday' is not a send time"),
    (["newsletters", "send-test", NEWSLETTER, "--to", "not-an-address"], 1, "--to: 'not-an-address' is not a valid"),
]


@pytest.mark.parametrize(("args", "status", "message"), BAD, ids=[" ".join(a[1:]) for a, *_ in BAD])
def test_a_mistake_exits_non_zero_with_one_line(
    env: dict[str, str], args: list[str], status: int, message: str
) -> None:
    ran = cadence(env, *args)
    assert ran.status == status, ran
    assert message in one_error_line(ran)


def test_a_broken_newsletter_file_is_reported_by_validate_with_its_field(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "newsletters"
    folder.mkdir()
    broken = folder / "broken.yaml"
    broken.write_text("kind: newsletter\nid: broken\nbased_on: lower-back-pain\nbody: Hi\naudience: {}\n")
    ran = cadence(env, "campaigns", "validate", str(broken))
    assert ran.status == 1
    assert one_error_line(ran) == (
        f"error: {broken}: audience: give topics (people who asked for this newsletter) or tags (people staff chose)"
    )


def test_a_test_send_goes_out_for_real_marked_and_uncounted(env: dict[str, str], sink: SmtpSink) -> None:
    before = deliveries(env)
    sink.clear()
    ran = cadence(env, "newsletters", "send-test", NEWSLETTER, "--to", "me@example.com", "--to", "boss@example.com")
    assert ran.status == 0 and "Test sent to 2 address(es)" in ran.out, ran
    received = sink.wait_for(2)
    assert sorted(m.rcpt_tos[0] for m in received) == ["boss@example.com", "me@example.com"]
    message = email.message_from_bytes(received[0].data, policy=email.policy.default)
    assert message["Subject"] == "[TEST] Hills, hips and your low back"
    assert "/u/" not in str(message["List-Unsubscribe"])  # a tester cannot unsubscribe anybody
    assert deliveries(env) == before  # no ledger row, nothing in the reports


def test_a_test_send_can_carry_a_chosen_readers_data(env: dict[str, str], sink: SmtpSink) -> None:
    sink.clear()
    ran = cadence(
        env, "newsletters", "send-test", NEWSLETTER, "--to", "me@example.com", "--subscriber", "r1@example.com"
    )
    assert ran.status == 0 and "with the data of r1@example.com" in " ".join(ran.out.split()), ran
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ("me@example.com",)  # to the tester, never to the reader
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"].startswith("[TEST] ")
    assert "Hi R1," in message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    unknown = cadence(
        env, "newsletters", "send-test", NEWSLETTER, "--to", "me@example.com", "--subscriber", "x@example.com"
    )
    assert unknown.status == 1 and "no subscriber 'x@example.com'" in one_error_line(unknown)


def test_campaigns_and_newsletters_are_listed_under_the_same_id_key(env: dict[str, str]) -> None:
    campaigns = json.loads(cadence(env, "campaigns", "list", "--json").out)
    newsletters = json.loads(cadence(env, "newsletters", "list", "--json").out)
    assert "lower-back-pain" in [c["id"] for c in campaigns]
    assert NEWSLETTER in [n["id"] for n in newsletters]
    assert all(c["campaign"] == c["id"] for c in campaigns)  # the older key of campaigns list, kept
