"""Newsletters on the real ledger, on SQLite and PostgreSQL: the audience, one row per recipient
however often it is scheduled (a unique index, not luck), local send times, the send-time
re-check, pause/resume/cancel, the locked version, and the emails themselves."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cadence.clock import FileClock
from cadence.config import Settings, load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.core.tokens import link_signature, make_token
from cadence.db.migrate import upgrade
from cadence.db.models import AuditEntry, Delivery, Link, Subscriber, SubscriberTag, SubscriberTopic
from cadence.db.session import transaction
from cadence.errors import InputError
from cadence.operations import enrollment, newsletters
from cadence.operations.runtime import Runtime
from cadence.operations.subscribers import import_subscribers, suppress, unsubscribe
from cadence.operations.tracking import record_open, resolve_click, web_view
from tests.support.cluster import ROOT, cadence_env
from tests.support.keys import TEST_KEYS
from tests.support.services import unavailable

NOW = datetime(2027, 1, 5, 12, 0, tzinfo=UTC)
ACTOR = "cli:tester"
MARKDOWN = """kind: newsletter
id: {id}
based_on: lower-back-pain
subject: Spring races are coming
preheader: Three things to check before your first race of the year, and a clinic update.
body: |
  ## Before race day

  Ease your **long run** down a week before, and keep one short faster session.

  - sleep well the two nights before
  - nothing new on race morning
cta:
  url: https://precisionbodywork.example/book
  label: Book a pre-race check
audience:
  topics: [clinic-news]
send_at: now
"""


def people() -> list[tuple[str, str | None, str, set[str], set[str]]]:
    """(email, zone, status, topics, tags)."""
    return [
        ("paris@example.com", "Europe/Paris", "active", {"clinic-news"}, {"vip"}),
        ("ny@example.com", "America/New_York", "active", {"clinic-news"}, set()),
        ("nozone@example.com", None, "active", {"clinic-news"}, set()),
        ("pending@example.com", None, "pending", {"clinic-news"}, set()),
        ("left@example.com", None, "unsubscribed", {"clinic-news"}, set()),
        ("bounced@example.com", None, "active", {"clinic-news"}, set()),
        ("notopic@example.com", None, "active", set(), {"vip"}),
    ]


def env_of(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment of :func:`setup`'s instance, for the installed `cadence` too."""
    return cadence_env(
        tmp_path / "data",
        CADENCE_DATABASE_URL=database_url,
        CADENCE_CAMPAIGNS_DIR=str(tmp_path / "campaigns"),
        CADENCE_CLOCK=f"file:{tmp_path / 'clock'}",
        CADENCE_BASE_URL="https://news.example.test",  # one-click unsubscribe needs https (RFC 8058)
    )


def setup(tmp_path: Path, database_url: str) -> tuple[Settings, FileClock]:
    campaigns = tmp_path / "campaigns"
    (campaigns / "newsletters").mkdir(parents=True)
    shutil.copy(ROOT / "campaigns" / "lower-back-pain.yaml", campaigns)
    shutil.copy(ROOT / "campaigns" / "sender.yaml", campaigns)  # the clinic's name and address
    shutil.copy(ROOT / "campaigns" / "newsletters" / "clinic-news-2027-01.yaml", campaigns / "newsletters")
    for name in ("spring", "other"):
        (campaigns / "newsletters" / f"{name}.yaml").write_text(MARKDOWN.format(id=name))
    clock = FileClock(tmp_path / "clock")
    clock.set(NOW)
    settings = load_settings(env_of(tmp_path, database_url))
    upgrade(settings.database_url)
    with transaction(settings.database_url) as session:
        rows = [SubscriberInput(e, e.split("@")[0].title(), tz) for e, tz, *_ in people()]
        import_subscribers(session, rows, NOW, keys=TEST_KEYS)
        # Suppressed while still "active" (as an address suppressed by another list would be).
        suppress(session, "bounced@example.com", "hard_bounce", NOW)
        for address, _, state, topics, tags in people():
            person = session.scalars(select(Subscriber).where(Subscriber.email == address)).one()
            person.status = state
            session.add_all(SubscriberTopic(subscriber_id=person.id, topic=t, joined_at=NOW) for t in topics)
            session.add_all(SubscriberTag(subscriber_id=person.id, tag=t, created_at=NOW) for t in tags)
    return settings, clock


def send_due(settings: Settings, clock: FileClock) -> list[bytes]:
    """One tick and its batches, in this process, into the outbox; the new emails."""
    runtime = Runtime.from_settings(replace(settings, clock_spec=str(clock)))
    before = set((settings.outbox_dir).glob("*.eml")) if settings.outbox_dir.exists() else set()
    for batch in enrollment.tick(runtime).batches:
        enrollment.deliver(runtime, batch)
    runtime.close()
    return [p.read_bytes() for p in sorted(set(settings.outbox_dir.glob("*.eml")) - before)]


def rows(settings: Settings, newsletter_id: str) -> dict[str, tuple[str, datetime]]:
    with transaction(settings.database_url) as session:
        found = session.execute(
            select(Subscriber.email, Delivery.state, Delivery.not_before)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.kind == "newsletter", Delivery.campaign_id == newsletter_id)
        )
        return {address: (state, due) for address, state, due in found}


def test_each_reader_gets_one_copy_at_their_local_time_and_changes_since_scheduling_are_honoured(
    tmp_path: Path, database_url: str
) -> None:
    settings, clock = setup(tmp_path, database_url)
    count = newsletters.audience(settings, "clinic-news-2027-01", NOW)
    # Confirmed, still subscribed, not suppressed, asked for clinic news: three people.
    assert count.total == 3 and count.suppressed == 1
    assert count.per_segment["everyday+no-race"] == 3

    # Staff tags and a drip's segments choose too (people on file who never asked for a topic).
    vips = settings.campaigns_dir / "newsletters" / "vips.yaml"
    vips.write_text(
        MARKDOWN.format(id="vips").replace(
            "  topics: [clinic-news]",
            "  tags: [vip]\n  segments: {campaign: lower-back-pain, include: [everyday+no-race]}",
        )
    )
    by_tag = newsletters.audience(settings, "vips", NOW)
    assert (by_tag.total, by_tag.per_segment["everyday+no-race"]) == (2, 2)  # Paris and the untopical vip

    first = newsletters.schedule(settings, "clinic-news-2027-01", at=None, actor=ACTOR, now=NOW)
    again = newsletters.schedule(settings, "clinic-news-2027-01", at=None, actor=ACTOR, now=NOW)
    assert (first.new_copies, again.new_copies, again.again) == (3, 0, True)
    scheduled = rows(settings, "clinic-news-2027-01")
    assert {a: due for a, (_, due) in scheduled.items()} == {
        "paris@example.com": datetime(2027, 1, 12, 8, tzinfo=UTC),  # 09:00 in Paris
        "ny@example.com": datetime(2027, 1, 12, 14, tzinfo=UTC),  # 09:00 in New York
        "nozone@example.com": datetime(2027, 1, 12, 14, tzinfo=UTC),  # the sender's zone
    }
    with pytest.raises(IntegrityError), transaction(settings.database_url) as session:
        # The database itself refuses a second copy, whoever tries.
        original = session.scalars(select(Delivery).where(Delivery.kind == "newsletter")).first()
        assert original is not None
        session.add(
            Delivery(
                **{c: getattr(original, c) for c in ("subscriber_id", "campaign_id", "step_id", "step_index", "kind")},
                state="queued",
                due_at=NOW,
                not_before=NOW,
                created_at=NOW,
            )
        )

    # After scheduling: one reader unsubscribes, another's address bounces elsewhere.
    with transaction(settings.database_url) as session:
        paris = session.scalars(select(Subscriber).where(Subscriber.email == "paris@example.com")).one()
        unsubscribe(session, paris, NOW, "link")
        suppress(session, "nozone@example.com", "complaint", NOW)
    clock.set(datetime(2027, 1, 12, 8, 30, tzinfo=UTC))
    assert send_due(settings, clock) == []  # Paris was due, but left
    clock.set(datetime(2027, 1, 12, 14, 1, tzinfo=UTC))
    sent = send_due(settings, clock)
    assert [email.message_from_bytes(m)["To"] for m in sent] == ["Ny <ny@example.com>"]
    report = newsletters.status(settings, "clinic-news-2027-01")
    assert (report["state"], report["sent"], report["skipped"], report["waiting"]) == ("sent", 1, 2, 0)
    assert send_due(settings, clock) == []  # nothing twice

    with pytest.raises(InputError, match="is sent: it cannot be scheduled again"):
        newsletters.schedule(settings, "clinic-news-2027-01", at=None, actor=ACTOR, now=clock.now())
    with transaction(settings.database_url) as session:
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.actor == ACTOR)).all()
    assert actions == ["newsletter.schedule", "newsletter.schedule"]


def test_pause_holds_resume_sends_cancel_drops_and_the_locked_version_is_what_goes_out(
    tmp_path: Path, database_url: str
) -> None:
    settings, clock = setup(tmp_path, database_url)
    newsletters.schedule(settings, "spring", at="now", actor=ACTOR, now=NOW)
    newsletters.schedule(settings, "other", at="2027-01-05T13:00:00+00:00", actor=ACTOR, now=NOW)
    assert newsletters.pause(settings, "spring", actor=ACTOR, now=NOW) == ("paused", 3)
    clock.set(NOW + timedelta(minutes=1))
    assert send_due(settings, clock) == []
    assert {state for state, _ in rows(settings, "spring").values()} == {"held"}

    # An edit after scheduling: refused clearly once sending started; the locked text goes out.
    path = settings.campaigns_dir / "newsletters" / "spring.yaml"
    path.write_text(path.read_text().replace("Spring races are coming", "Edited subject line here"))
    assert newsletters.resume(settings, "spring", actor=ACTOR, now=NOW) == ("scheduled", 3)
    sent = send_due(settings, clock)
    assert len(sent) == 3
    message = email.message_from_bytes(sent[0], policy=email.policy.default)
    assert message["Subject"] == "Spring races are coming"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # RFC 8058, as drips
    assert str(message["List-Unsubscribe"]).startswith(f"<{settings.base_url}/u/")
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Before race day" in text and "nothing new on race morning" in text
    assert "Clinic news for runners" in text and "January 2027" in text
    assert " of 1" not in text and "Back course" not in text  # a newsletter, not "Email 1 of 1"
    assert "1801 W Main St, Suite 200, Richmond, VA 23220" in text  # the shared footer
    assert f"{settings.base_url}/o/" in html and f"{settings.base_url}/c/" in html  # tracked
    if database_url.startswith("sqlite"):  # the email does not depend on the database: check it once
        assert_spamassassin_scores_nothing(sent[0])

    # Opens, clicks and the web view work for newsletter copies as for drip steps.
    runtime = Runtime.from_settings(settings)
    with transaction(settings.database_url) as session:
        copy = session.scalars(select(Delivery).where(Delivery.campaign_id == "spring")).first()
        assert copy is not None
        key = settings.secret_key
        assert record_open(runtime, session, copy.id, link_signature(key, "open", copy.id), clock.now())
        link = session.scalars(select(Link)).first()
        assert link is not None
        signature = link_signature(key, "click", copy.id, link.id)
        assert resolve_click(runtime, session, copy.id, link.id, signature, clock.now()) == link.url
        page = web_view(runtime, session, make_token(key, "webview", copy.id))
        assert page.subject == "Spring races are coming" and "Before race day" in page.html
    report = newsletters.status(settings, "spring")
    assert (report["sent"], report["opens"], report["clicks"]) == (3, 1, 1)
    with pytest.raises(InputError, match="edited after sending started"):
        newsletters.schedule(settings, "spring", at="now", actor=ACTOR, now=clock.now())
    _, problems = newsletters.validate(settings, "spring", clock.now())
    assert any("edited after sending started" in p.message for p in problems)

    assert newsletters.cancel(settings, "other", actor=ACTOR, now=clock.now()) == ("cancelled", 3)
    clock.set(NOW + timedelta(hours=2))
    assert send_due(settings, clock) == []
    assert {state for state, _ in rows(settings, "other").values()} == {"skipped"}
    with pytest.raises(InputError, match="is cancelled: it cannot be resumed"):
        newsletters.resume(settings, "other", actor=ACTOR, now=clock.now())
    listed = {item["id"]: item["state"] for item in newsletters.list_all(settings)}
    assert listed == {"clinic-news-2027-01": "draft", "other": "cancelled", "spring": "sent"}


def assert_spamassassin_scores_nothing(message: bytes) -> None:
    """As tests/test_series_as_received.py checks the drip: no SpamAssassin rule adds points."""
    if shutil.which("spamassassin") is None:
        unavailable("spamassassin", "apt-get install spamassassin (make test does this as root)")
    # -L: local tests only (no network here); -t: report the score and the rules that hit.
    out = subprocess.run(["spamassassin", "-L", "-t"], input=message, capture_output=True, timeout=120).stdout
    scoring = re.findall(rb"^\s*(\d+\.\d+) ([A-Z0-9_]+) ", out.split(b"Content analysis details", 1)[-1], re.M)
    assert scoring or b"Content analysis details" in out, out[-2000:]
    assert not [(rule, points) for points, rule in scoring if float(points) > 0], out[-2000:]


def test_a_held_copy_stays_on_the_subscribers_timeline(tmp_path: Path, database_url: str) -> None:
    """`cadence subscribers show` (and the staff API, the same profile) lists every email of the
    subscriber: a copy held by a paused newsletter says so, as the console's timeline does.
    Before, the timeline's new "scheduled"/"will be skipped" lines left "held" out altogether:
    the paused newsletter vanished from the subscriber's history."""
    import json

    from tests.test_cli import cadence

    settings, _ = setup(tmp_path, database_url)
    newsletters.schedule(settings, "spring", at="now", actor=ACTOR, now=NOW)
    assert newsletters.pause(settings, "spring", actor=ACTOR, now=NOW) == ("paused", 3)
    shown = cadence(env_of(tmp_path, database_url), "subscribers", "show", "paris@example.com", "--json")
    assert shown.status == 0, shown
    entries = [t for t in json.loads(shown.out)["timeline"] if t["campaign"] == "spring"]
    assert [t["what"] for t in entries] == ["held"], entries
