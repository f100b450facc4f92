"""Stored newsletters (written through the API or the console) on SQLite and PostgreSQL: versions
and their history, a stale save refused, every field error named, names shared with files,
hostile text kept as written but shown escaped, the live preview and counts writing nothing,
and a stored draft scheduled, locked and delivered once by the file newsletters' own send path."""

from __future__ import annotations

import email
import email.policy
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cadence.db.draft_models import NewsletterDraft, NewsletterDraftVersion
from cadence.db.models import AuditEntry, Delivery
from cadence.db.session import transaction
from cadence.errors import InputError, NotFound
from cadence.operations import newsletter_drafts as drafts
from cadence.operations import newsletters
from cadence.operations.runtime import Runtime
from tests.test_newsletters import ACTOR, NOW, rows, send_due, setup

NAME = "april-news"
HOSTILE_SUBJECT = "<script>alert('subject')</script> & more"
HOSTILE_BODY = "Hello <img src=x onerror=alert(1)> and <script>alert('body')</script>\n\n[click](javascript:alert(2))"


def complete(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "based_on": "lower-back-pain",
        "subject": "April at the clinic",
        "preheader": "New evening hours, and a short routine for stiff hips after long runs.",
        "body": "## Evening hours\n\nWe now open until **8 pm** on Thursdays.\n\n- book online\n- or call us\n\n"
        "Text, not code: [[ subscriber.email ]]",
        "audience": {"topics": ["clinic-news"]},
        "send_at": "now",
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def counts(settings: Any) -> tuple[int, int]:
    with transaction(settings.database_url) as session:
        return (
            session.scalar(select(func.count()).select_from(NewsletterDraft)) or 0,
            session.scalar(select(func.count()).select_from(NewsletterDraftVersion)) or 0,
        )


def test_versions_are_kept_a_stale_save_is_refused_and_every_change_is_audited(
    tmp_path: Path, database_url: str
) -> None:
    settings, _ = setup(tmp_path, database_url)
    # A half-written draft may be saved; what still stops scheduling is listed.
    first = drafts.create(settings, NAME, {"based_on": "lower-back-pain", "subject": "April"}, actor=ACTOR, now=NOW)
    assert (first.version, first.state, first.locked) == (1, "draft", False)
    assert {p.field for p in first.missing} >= {"audience"}
    second = drafts.update(settings, NAME, complete(), expected_version=1, actor="user:ann@example.com", now=NOW)
    assert second.version == 2 and second.missing == ()

    # Someone else saved meanwhile: this editor's version 1 is stale, nothing is overwritten.
    with pytest.raises(drafts.VersionConflict) as refused:
        drafts.update(settings, NAME, complete(subject="Mine"), expected_version=1, actor=ACTOR, now=NOW)
    assert refused.value.current_version == 2 and "version 2" in str(refused.value)
    assert drafts.get(settings, NAME).fields["subject"] == "April at the clinic"
    same = drafts.update(settings, NAME, complete(), expected_version=2, actor=ACTOR, now=NOW)
    assert same.version == 2  # nothing changed: no new version

    third = drafts.update(settings, NAME, complete(subject="April news"), expected_version=2, actor=ACTOR, now=NOW)
    assert third.version == 3
    history = drafts.history(settings, NAME)
    assert [(v.version, v.fields.get("subject")) for v in history] == [
        (3, "April news"),
        (2, "April at the clinic"),
        (1, "April"),
    ]
    assert [d.id for d in drafts.list_drafts(settings)] == [NAME]
    listed = {item["id"]: item["state"] for item in newsletters.list_all(settings)}
    assert listed[NAME] == "draft" and "spring" in listed  # files and stored ones together

    with pytest.raises(drafts.VersionConflict):
        drafts.delete(settings, NAME, actor=ACTOR, now=NOW, expected_version=2)
    drafts.delete(settings, NAME, actor=ACTOR, now=NOW, expected_version=3)
    assert counts(settings) == (0, 0)
    with pytest.raises(NotFound):
        drafts.get(settings, NAME)
    with transaction(settings.database_url) as session:
        audit = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.detail).where(
                AuditEntry.target == f"newsletter:{NAME}"
            )
        ).all()
    assert [(a, b) for a, b, _ in audit] == [
        (ACTOR, "newsletter.create"),
        ("user:ann@example.com", "newsletter.update"),
        (ACTOR, "newsletter.update"),
        (ACTOR, "newsletter.delete"),
    ]
    assert audit[-1][2]["fields"]["subject"] == "April news"  # the deleted text is not lost


def test_each_wrong_field_is_named_and_nothing_is_saved(tmp_path: Path, database_url: str) -> None:
    settings, _ = setup(tmp_path, database_url)
    drafts.create(settings, NAME, complete(), actor=ACTOR, now=NOW)
    cases: list[tuple[dict[str, Any], str]] = [
        (
            complete(audience={"topics": ["clinic-news"], "rules": [{"attribute": "terrain", "op": "like"}]}),
            "audience.rules.0.op",
        ),
        (
            complete(
                audience={"topics": ["clinic-news"], "rules": [{"attribute": "terrain", "op": "in", "value": "x"}]}
            ),
            "audience.rules.0",
        ),
        (complete(audience={"rules": []}), "audience"),  # nobody chosen: topics or tags needed
        (
            complete(audience={"topics": ["x"], "segments": {"campaign": "lower-back-pain", "include": ["nope"]}}),
            "audience.segments.include.0",
        ),
        (complete(subject="x" * 121), "subject"),
        (complete(subject="two\nlines"), "subject"),
        (complete(body="ok {% endraw %} then"), "body"),
        (complete(body="binary \x00 junk"), "body"),
        (complete(body="x" * 100_001), "body"),
        (complete(send_at="next tuesday"), "send_at"),
        (complete(timezone="Mars/Olympus"), "timezone"),
        (complete(cta={"url": "http://plain.example", "label": "Go"}), "cta.url"),
        (complete(based_on="no-such-drip"), "based_on"),
        ({**complete(), "colour": "red"}, "colour"),
        ({**complete(), "template": "newsletters/x.mjml"}, "template"),
    ]
    for fields, field in cases:
        with pytest.raises(drafts.DraftInvalid) as refused:
            drafts.update(settings, NAME, fields, expected_version=1, actor=ACTOR, now=NOW)
        assert field in [p.field for p in refused.value.problems], (field, refused.value.problems)
        assert str(refused.value).startswith(refused.value.problems[0].field)
    for bad_name in ("Bad Name!", "drafts", "x" * 101):
        with pytest.raises(drafts.DraftInvalid) as refused:
            drafts.create(settings, bad_name, complete(), actor=ACTOR, now=NOW)
        assert [p.field for p in refused.value.problems] == ["id"]
    assert counts(settings) == (1, 1)
    assert drafts.get(settings, NAME).version == 1


def test_a_name_is_shared_with_files_and_drips(tmp_path: Path, database_url: str) -> None:
    settings, _ = setup(tmp_path, database_url)
    for taken in ("spring", "lower-back-pain"):  # a newsletter file, a drip campaign
        with pytest.raises(drafts.NameTaken, match="id: "):
            drafts.create(settings, taken, complete(), actor=ACTOR, now=NOW)
    drafts.create(settings, NAME, complete(), actor=ACTOR, now=NOW)
    with pytest.raises(drafts.NameTaken):
        drafts.create(settings, NAME, complete(), actor=ACTOR, now=NOW)
    newsletters.schedule(settings, "spring", at=None, actor=ACTOR, now=NOW)
    # A file newsletter scheduled and then removed still owns its name (its ledger rows do).
    (settings.campaigns_dir / "newsletters" / "spring.yaml").unlink()
    with pytest.raises(drafts.NameTaken, match="already scheduled"):
        drafts.create(settings, "spring", complete(), actor=ACTOR, now=NOW)
    # A file added later under a stored newsletter's name cannot be scheduled over it.
    (settings.campaigns_dir / "newsletters" / f"{NAME}.yaml").write_text(
        (settings.campaigns_dir / "newsletters" / "other.yaml").read_text().replace("id: other", f"id: {NAME}")
    )
    with pytest.raises(drafts.NameTaken, match="both a file and a stored newsletter"):
        newsletters.schedule(settings, NAME, at=None, actor=ACTOR, now=NOW)


def test_hostile_text_is_stored_as_written_and_shown_escaped(tmp_path: Path, database_url: str) -> None:
    settings, _ = setup(tmp_path, database_url)
    fields = complete(subject=HOSTILE_SUBJECT, preheader="<b>bold</b> claim", body=HOSTILE_BODY)
    drafts.create(settings, NAME, fields, actor=ACTOR, now=NOW)
    stored = drafts.get(settings, NAME).fields
    assert (stored["subject"], stored["body"]) == (HOSTILE_SUBJECT, HOSTILE_BODY)  # verbatim

    shown = drafts.preview(settings, stored, now=NOW, newsletter_id=NAME)
    assert shown.subject == HOSTILE_SUBJECT  # a subject is plain text in a header, not HTML
    html = shown.html
    assert "<script>" not in html and "<img src=x" not in html
    assert 'href="javascript:' not in html  # CommonMark's link check (markdown-it validateLink): left as text
    assert "&lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt;" in html or "&lt;script&gt;alert(" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


def test_preview_and_counts_write_nothing_and_show_placeholders(tmp_path: Path, database_url: str) -> None:
    settings, _ = setup(tmp_path, database_url)
    half = {"based_on": "lower-back-pain", "body": "# Hello [[ subscriber.first_name ]]\n\nSee you soon."}
    shown = drafts.preview(settings, half, now=NOW)
    assert shown.subject == "(no subject yet)"
    assert "Hello [[ subscriber.first_name ]]" in shown.text  # a body cannot run per-reader code
    assert {p.field for p in shown.problems} >= {"audience"}
    bad = drafts.preview(settings, {**half, "subject": "x" * 200}, now=NOW)
    assert bad.subject == "(no subject yet)" and "subject" in [p.field for p in bad.problems]
    checked = drafts.preview(settings, complete(), now=NOW, checks=True)
    assert "Evening hours" in checked.html and "8 pm" in checked.text and checked.problems == ()
    assert "Jordan" not in checked.subject and isinstance(checked.checks, tuple)
    with pytest.raises(drafts.DraftInvalid, match="based_on"):
        drafts.preview(settings, {"body": "x"}, now=NOW)

    counted = drafts.audience_counts(
        settings, {"based_on": "lower-back-pain", "audience": {"topics": ["clinic-news"]}}, now=NOW
    )
    assert (counted.total, counted.suppressed) == (3, 1)  # as the file newsletter with that audience
    vips = drafts.audience_counts(settings, {"based_on": "lower-back-pain", "audience": {"tags": ["vip"]}}, now=NOW)
    assert vips.total == 2
    with pytest.raises(drafts.DraftInvalid) as refused:
        drafts.audience_counts(
            settings,
            {
                "based_on": "lower-back-pain",
                "audience": {"tags": ["vip"], "rules": [{"attribute": "", "op": "eq", "value": 1}]},
            },
            now=NOW,
        )
    assert [p.field for p in refused.value.problems] == ["audience.rules.0.attribute"]
    assert counts(settings) == (0, 0)


def test_a_stored_draft_is_scheduled_locked_and_delivered_once_by_the_file_send_path(
    tmp_path: Path, database_url: str
) -> None:
    settings, clock = setup(tmp_path, database_url)
    drafts.create(settings, NAME, complete(audience=None), actor=ACTOR, now=NOW)
    with pytest.raises(drafts.DraftInvalid, match="audience"):  # not complete: not scheduled
        drafts.schedule(settings, NAME, actor=ACTOR, now=NOW)
    drafts.update(settings, NAME, complete(), expected_version=1, actor=ACTOR, now=NOW)
    with pytest.raises(drafts.VersionConflict):
        drafts.schedule(settings, NAME, expected_version=1, actor=ACTOR, now=NOW)
    assert rows(settings, NAME) == {}

    done = drafts.schedule(settings, NAME, expected_version=2, actor=ACTOR, now=NOW)
    assert (done.recipients, done.new_copies) == (3, 3)
    assert drafts.get(settings, NAME).state == "scheduled"
    for change in (
        lambda: drafts.update(settings, NAME, complete(subject="Too late"), expected_version=2, actor=ACTOR, now=NOW),
        lambda: drafts.delete(settings, NAME, actor=ACTOR, now=NOW),
    ):
        with pytest.raises(drafts.DraftLocked, match="is scheduled"):
            change()
    assert drafts.get(settings, NAME).version == 2

    clock.set(NOW + timedelta(minutes=1))
    sent = send_due(settings, clock)
    assert sorted(email.message_from_bytes(m)["To"] for m in sent) == [
        "Nozone <nozone@example.com>",
        "Ny <ny@example.com>",
        "Paris <paris@example.com>",
    ]
    message = email.message_from_bytes(sent[0], policy=email.policy.default)
    assert message["Subject"] == "April at the clinic"
    assert str(message["List-Unsubscribe"]).startswith(f"<{settings.base_url}/u/")
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Evening hours" in text and "Text, not code: [[ subscriber.email ]]" in text
    assert send_due(settings, clock) == []  # nothing twice
    assert {state for state, _ in rows(settings, NAME).values()} == {"sent"}
    with transaction(settings.database_url) as session:
        assert session.scalar(select(func.count()).where(Delivery.campaign_id == NAME)) == 3

    status = newsletters.status(settings, NAME)
    assert (status["state"], status["sent"]) == ("sent", 3)
    assert drafts.get(settings, NAME).state == "sent"
    with pytest.raises(InputError, match="it cannot be scheduled again"):
        drafts.schedule(settings, NAME, actor=ACTOR, now=clock.now())
    with pytest.raises(drafts.DraftLocked, match="is sent"):
        drafts.update(settings, NAME, complete(subject="Again"), expected_version=2, actor=ACTOR, now=clock.now())


def test_a_test_send_of_a_stored_draft_goes_through_the_transport_and_is_never_counted(
    tmp_path: Path, database_url: str
) -> None:
    settings, _ = setup(tmp_path, database_url)
    drafts.create(settings, NAME, complete(preheader=None), actor=ACTOR, now=NOW)
    runtime = Runtime.from_settings(settings)
    try:
        with pytest.raises(drafts.DraftInvalid, match="preheader"):
            drafts.send_test(runtime, NAME, ["me@example.org"], actor=ACTOR, now=NOW)
        drafts.update(settings, NAME, complete(), expected_version=1, actor=ACTOR, now=NOW)
        before = set(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else set()
        assert drafts.send_test(runtime, NAME, ["me@example.org"], actor=ACTOR, now=NOW) == 1
        with pytest.raises(NotFound):
            drafts.send_test(runtime, "spring-x", ["me@example.org"], actor=ACTOR, now=NOW)
    finally:
        runtime.close()
    new = sorted(set(settings.outbox_dir.glob("*.eml")) - before)
    assert len(new) == 1
    message = email.message_from_bytes(new[0].read_bytes())
    assert message["Subject"] == "[TEST] April at the clinic" and "me@example.org" in message["To"]
    assert rows(settings, NAME) == {}  # no ledger row


def test_two_editors_saving_the_same_version_at_once_one_wins_and_the_other_is_told(
    tmp_path: Path, database_url: str
) -> None:
    settings, _ = setup(tmp_path, database_url)
    drafts.create(settings, NAME, complete(), actor=ACTOR, now=NOW)
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def save(who: str) -> None:
        barrier.wait()
        try:
            outcomes[who] = drafts.update(
                settings, NAME, complete(subject=f"By {who}"), expected_version=1, actor=who, now=NOW
            ).version
        except drafts.VersionConflict as exc:
            outcomes[who] = exc

    threads = [threading.Thread(target=save, args=(who,)) for who in ("user:a", "user:b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(type(o).__name__ for o in outcomes.values()) == ["VersionConflict", "int"], outcomes
    winner = next(who for who, o in outcomes.items() if o == 2)
    assert drafts.get(settings, NAME).fields["subject"] == f"By {winner}"
    assert [v.version for v in drafts.history(settings, NAME)] == [2, 1]
