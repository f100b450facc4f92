"""Bounce mail and the one place every bounce, complaint and unsubscribe is applied: real DSN files,
real SQLite and PostgreSQL, each event applied exactly once."""

from __future__ import annotations

import email
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flufl.bounce import all_failures
from sqlalchemy import delete, func, select

from cadence.core.campaign import Campaign
from cadence.core.subscriber_fields import SubscriberInput, email_hash
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Enrollment, Event, Subscriber, Suppression
from cadence.db.session import transaction
from cadence.inbound.bounce_mailbox import fetch_imap_bounces, parse_dsn, process_bounce_dir
from cadence.operations import enrollment
from cadence.operations.bounce_events import BounceEvent, apply_bounce_events, claim_event_key
from cadence.operations.subscribers import import_subscribers, is_suppressed
from tests.support.keys import TEST_KEYS

NOW = datetime(2026, 3, 10, 9, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "dsn"
# Message-IDs quoted by the fixtures, as make_message_id wrote them for deliveries 42, 43, 55.
ALICE_ID = "<d42.0c9d8e7f6a5b4c3d@news.cadence.example>"
BOB_ID = "<d43.9f8e7d6c5b4a3921@news.cadence.example>"
NOBODY_ID = "<d55.1a2b3c4d5e6f7a8b@news.cadence.example>"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
        upgrade(url)
        return url
    pg_url: str = request.getfixturevalue("postgres_url")  # one database per run: start empty
    upgrade(pg_url)
    with transaction(pg_url) as session:
        for table in (Event, Suppression, Delivery, Enrollment, Subscriber):
            session.execute(delete(table))
    return pg_url


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    return url


def add_subscriber(url: str, address: str, *, delivery_id: int | None = None, message_id: str = "") -> int:
    with transaction(url) as session:
        person = Subscriber(
            email=address, email_key=address.lower(), status="active", created_at=NOW, updated_at=NOW, soft_bounces=0
        )
        session.add(person)
        session.flush()
        if delivery_id is not None:
            session.add(
                Delivery(
                    id=delivery_id,
                    subscriber_id=person.id,
                    campaign_id="lower-back-pain",
                    step_id="s",
                    step_index=0,
                    state="sent",
                    due_at=NOW,
                    not_before=NOW,
                    created_at=NOW,
                    message_id=message_id,
                )
            )
        return person.id


def subscriber(url: str, address: str) -> Subscriber:
    with transaction(url) as session:
        found = session.scalar(select(Subscriber).where(Subscriber.email_key == address))
        assert found is not None
        return found


def suppression_reasons(url: str) -> dict[str, str]:
    with transaction(url) as session:
        return {row.email_hash: row.reason for row in session.scalars(select(Suppression))}


def count(url: str, model: type[Any]) -> int:
    with transaction(url) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def dsn(action: str, status: str, recipient: str = "someone@example.com") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.com\r\nTo: bounces@news.cadence.example\r\n"
        f"Message-ID: <{action}.{status}@mx.example.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nReport.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n\r\n--b--\r\n"
    ).encode()


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("name", "kind", "address", "message_id"),
    [
        ("hard_bounce_5.1.1.eml", "hard_bounce", "gone@example.org", "<d7.5f1c0e2a9b3d4c61@news.cadence.example>"),
        ("soft_bounce_4.2.2.eml", "soft_bounce", "full@example.net", None),
        ("auto_reply.eml", "ignored", "holiday@example.com", None),
        ("dsn_forwarded_quoted.eml", "hard_bounce", "alice@old.example", ALICE_ID),
        ("quoted_original.eml", "hard_bounce", "bob@old-isp.example", BOB_ID),
        ("plain_text_bounce.eml", "hard_bounce", "nobody@legacy.example", NOBODY_ID),
    ],
)
def test_each_bounce_mail_names_its_kind_its_original_recipient_and_our_message(
    name: str, kind: str, address: str, message_id: str | None
) -> None:
    event = parse_dsn((FIXTURES / name).read_bytes())
    assert event is not None
    assert (event.kind, event.email, event.message_id) == (kind, address, message_id)
    assert event.provider_event_id.startswith("dsn:<")


def test_flufl_alone_would_blame_our_own_sender_and_parse_dsn_does_not() -> None:
    for name, expected in (("quoted_original.eml", "bob@old-isp.example"), ("not_a_bounce.eml", None)):
        raw = (FIXTURES / name).read_bytes()
        # Its LLNL heuristic takes "..., coach@news.cadence.example, ..." in the quoted body.
        assert b"coach@news.cadence.example" in all_failures(email.message_from_bytes(raw))[1]
        event = parse_dsn(raw)
        assert (event.email if event else None) == expected


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("failed", "5.1.1", "hard_bounce"),  # no such mailbox
        ("failed", "5.4.4", "hard_bounce"),  # unable to route: no such domain
        ("failed", "5.2.2", "soft_bounce"),  # mailbox full: "persistent transient" (RFC 3463)
        ("failed", "5.7.1", "soft_bounce"),  # policy: refused our message, not a dead mailbox
        ("failed", "4.4.7", "soft_bounce"),  # gave up retrying
        ("delayed", "4.4.1", "ignored"),  # still trying: may yet be delivered
        ("delivered", "2.0.0", "ignored"),
    ],
)
def test_the_rfc_3464_status_decides_hard_soft_or_nothing(action: str, status: str, kind: str) -> None:
    event = parse_dsn(dsn(action, status))
    assert event is not None and event.kind == kind and event.email == "someone@example.com"


# ---------------------------------------------------------------------------- applying


def test_a_bounce_folder_suppresses_exactly_the_hard_bounces_once(db: str, tmp_path: Path) -> None:
    for address in ("gone@example.org", "full@example.net", "holiday@example.com", "reader@example.com"):
        add_subscriber(db, address)
    alice = add_subscriber(db, "alice@old.example", delivery_id=42, message_id=ALICE_ID)
    add_subscriber(db, "bob@old-isp.example", delivery_id=43, message_id=BOB_ID)
    add_subscriber(db, "nobody@legacy.example", delivery_id=55, message_id=NOBODY_ID)
    inbox = tmp_path / "bounces"
    shutil.copytree(FIXTURES, inbox)

    result = process_bounce_dir(inbox, database_url=db, now=NOW, soft_limit=3)

    hard = ("gone@example.org", "alice@old.example", "bob@old-isp.example", "nobody@legacy.example")
    assert suppression_reasons(db) == {email_hash(a): "hard_bounce" for a in hard}
    assert {subscriber(db, a).status for a in hard} == {"bounced"}
    assert subscriber(db, "full@example.net").soft_bounces == 1
    assert subscriber(db, "full@example.net").status == "active"
    assert subscriber(db, "holiday@example.com").status == "active"  # the auto-reply changed nothing
    assert (result.messages, result.events.applied, result.events.ignored) == (7, 5, 1)
    assert result.unrecognised == ["not_a_bounce.eml"]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted(p.name for p in FIXTURES.iterdir())
    with transaction(db) as session:
        forwarded = session.scalar(select(Event).where(Event.delivery_id == 42))
        assert forwarded is not None and forwarded.subscriber_id == alice and forwarded.kind == "hard_bounce"
        assert "final recipient alice@new-provider.example" in forwarded.data["detail"]

    # The same mail again (a second copy of the mailbox): nothing new happens.
    for path in FIXTURES.iterdir():
        shutil.copy(path, inbox / path.name)
    again = process_bounce_dir(inbox, database_url=db, now=NOW, soft_limit=3)
    assert (again.events.applied, again.events.duplicates) == (0, 5)
    assert count(db, Event) == 5 and count(db, Suppression) == 4
    assert subscriber(db, "full@example.net").soft_bounces == 1


def test_soft_bounces_suppress_at_the_limit_counting_each_delivery_once(db: str) -> None:
    add_subscriber(db, "full@example.net", delivery_id=1, message_id="<d1.0000000000000001@news.cadence.example>")
    with transaction(db) as session:
        for n in (2, 3):
            session.add(
                Delivery(
                    id=n,
                    subscriber_id=subscriber(db, "full@example.net").id,
                    campaign_id="c",
                    step_id="s",
                    step_index=n,
                    due_at=NOW,
                    not_before=NOW,
                    created_at=NOW,
                )
            )

    def soft(event_id: str, delivery_id: int) -> BounceEvent:
        return BounceEvent("soft_bounce", "full@example.net", event_id, delivery_id, "4.2.2 mailbox full")

    with transaction(db) as session:
        # A delay warning and the final failure of one message: one soft bounce, not two.
        apply_bounce_events(session, [soft("dsn:a", 1), soft("dsn:b", 1), soft("dsn:c", 2)], NOW, soft_limit=3)
    assert subscriber(db, "full@example.net").soft_bounces == 2
    assert not suppression_reasons(db)
    with transaction(db) as session:
        result = apply_bounce_events(session, [soft("dsn:d", 3)], NOW, soft_limit=3)
    assert result.suppressed == 1
    assert suppression_reasons(db) == {email_hash("full@example.net"): "soft_bounce_limit"}
    assert subscriber(db, "full@example.net").status == "bounced"


def test_the_same_event_delivered_twice_is_one_row_and_one_suppression(db: str) -> None:
    add_subscriber(db, "gone@example.org")
    event = BounceEvent("complaint", "Gone@Example.org", "postmark:SpamComplaint:7", detail="SpamComplaint")
    with transaction(db) as session:
        first = apply_bounce_events(session, [event, event], NOW, soft_limit=3)
    with transaction(db) as session:
        second = apply_bounce_events(session, [event], NOW, soft_limit=3)
    assert (first.applied, first.duplicates, first.suppressed, second.duplicates) == (1, 1, 1, 1)
    assert count(db, Event) == 1 and count(db, Suppression) == 1
    assert subscriber(db, "gone@example.org").status == "complained"


def test_an_address_we_never_mailed_is_recorded_but_not_suppressed(db: str) -> None:
    with transaction(db) as session:
        result = apply_bounce_events(
            session, [BounceEvent("hard_bounce", "stranger@example.com", "dsn:<backscatter@x>")], NOW, soft_limit=3
        )
    assert (result.applied, result.unknown, result.suppressed) == (1, 1, 0)
    with transaction(db) as session:
        row = session.scalars(select(Event)).one()
        assert row.subscriber_id is None and "stranger" not in str(row.data)


def test_two_transactions_racing_for_one_event_key_apply_it_once(postgres_url: str) -> None:
    upgrade(postgres_url)
    key = f"bounce:race:{time.time_ns()}"
    answers: list[bool] = []

    def second() -> None:
        with transaction(postgres_url) as session:
            answers.append(claim_event_key(session, key, kind="hard_bounce", now=NOW))

    with transaction(postgres_url) as session:
        assert claim_event_key(session, key, kind="hard_bounce", now=NOW)
        racer = threading.Thread(target=second)
        racer.start()
        time.sleep(0.3)
        assert racer.is_alive()  # waiting on our uncommitted row, not inserting a second one
    racer.join(5)
    assert answers == [False]


def test_a_suppressed_address_comes_back_through_neither_enroll_nor_import(sqlite_db: str) -> None:
    person = add_subscriber(sqlite_db, "gone@example.org")
    event = parse_dsn((FIXTURES / "hard_bounce_5.1.1.eml").read_bytes())
    assert event is not None
    campaign = Campaign("c", "C", "Coach", "coach@news.cadence.example", "UTC", segments=(), steps=())
    with transaction(sqlite_db) as session:
        apply_bounce_events(session, [event], NOW, soft_limit=3)
    with transaction(sqlite_db) as session:
        enrolled = enrollment.enroll(session, campaign, [session.get_one(Subscriber, person)], NOW)
        imported = import_subscribers(session, [SubscriberInput("GONE@example.org", "Back again")], NOW, keys=TEST_KEYS)
        assert is_suppressed(session, "gone@example.org")
    assert (enrolled.enrolled, enrolled.not_active) == (0, 1)
    assert (imported.suppressed, imported.created, imported.updated) == (1, 0, 0)
    assert count(sqlite_db, Enrollment) == 0


# ---------------------------------------------------------------------------- IMAP


class FakeImap:
    """Answers like imaplib.IMAP4 for the few commands fetch_imap_bounces sends."""

    def __init__(self, messages: dict[bytes, bytes]) -> None:
        self.messages, self.seen, self.log = messages, set[bytes](), list[str]()

    def login(self, user: str, password: str) -> tuple[str, list[Any]]:
        self.log.append(f"LOGIN {user} {password}")
        return "OK", [b""]

    def select(self, mailbox: str = "INBOX", readonly: bool = False) -> tuple[str, list[Any]]:
        self.log.append(f"SELECT {mailbox}")
        return "OK", [str(len(self.messages)).encode()]

    def uid(self, command: str, *args: Any) -> tuple[str, list[Any]]:
        self.log.append(" ".join([command, *(a.decode() if isinstance(a, bytes) else a for a in args)]))
        if command == "SEARCH":
            return "OK", [b" ".join(u for u in self.messages if u not in self.seen)]
        if command == "FETCH":
            return "OK", [(b"1 (UID " + args[0] + b" BODY[] {1}", self.messages[args[0]]), b")"]
        self.seen.add(args[0])
        return "OK", []

    def logout(self) -> tuple[str, list[Any]]:
        return "BYE", []


def test_imap_reads_unseen_mail_with_peek_and_flags_it_seen_after_applying(sqlite_db: str) -> None:
    add_subscriber(sqlite_db, "gone@example.org")
    imap = FakeImap({b"7": (FIXTURES / "hard_bounce_5.1.1.eml").read_bytes(), b"8": b"Subject: hi\r\n\r\nhello\r\n"})
    url = "imaps://bounce%40news.cadence.example:p%40ss@imap.example.com/Bounces"
    result = fetch_imap_bounces(url, database_url=sqlite_db, now=NOW, soft_limit=3, client=imap)
    assert imap.log[:3] == ["LOGIN bounce@news.cadence.example p@ss", 'SELECT "Bounces"', "SEARCH UNSEEN"]
    assert "FETCH 7 (BODY.PEEK[])" in imap.log and imap.seen == {b"7", b"8"}
    assert (result.messages, result.events.suppressed, result.unrecognised) == (2, 1, ["imap uid 8"])
    assert fetch_imap_bounces(url, database_url=sqlite_db, now=NOW, soft_limit=3, client=imap).messages == 0


# ---------------------------------------------------------------------------- CLI


def test_the_cli_processes_a_folder_and_prints_a_summary(
    sqlite_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from cadence.cli.bounces import register
    from cadence.config import get_settings

    add_subscriber(sqlite_db, "gone@example.org")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(FIXTURES / "hard_bounce_5.1.1.eml", inbox)
    monkeypatch.setenv("CADENCE_DATABASE_URL", sqlite_db)
    monkeypatch.setenv("CADENCE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a group with one command would collapse into it
    register(app)
    try:
        outcome = CliRunner().invoke(app, ["bounces", "process", str(inbox)])
    finally:
        get_settings.cache_clear()
    assert outcome.exit_code == 0, outcome.output
    assert "addresses suppressed" in outcome.output and (inbox / "processed" / "hard_bounce_5.1.1.eml").exists()
    assert suppression_reasons(sqlite_db) == {email_hash("gone@example.org"): "hard_bounce"}
