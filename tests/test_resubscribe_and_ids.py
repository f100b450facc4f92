"""Coming back after unsubscribing, what a stranger's signup may change, and ids that are never
reused (signed links carry ids)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cadence.core.subscriber_fields import SubscriberInput
from cadence.core.tokens import make_token
from cadence.db.migrate import upgrade
from cadence.db.models import Enrollment, Subscriber
from cadence.db.session import transaction
from cadence.files.campaigns import find_campaign
from cadence.operations.enrollment import enroll
from cadence.operations.signup import Answers, SignupContext, SignupData, confirm, read_confirmation_token, sign_up
from cadence.operations.subscribers import unsubscribe, upsert_subscriber
from tests.support.cluster import ROOT
from tests.support.keys import TEST_KEYS

NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
SECRET = "test-secret-key-0123456789abcdef"
WHERE = SignupContext("192.0.2.7", "test", "web:subscribe", "https://clinic.example/")


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    return url


def test_an_erased_subscribers_id_is_never_given_to_the_next_one(db: str) -> None:
    with transaction(db) as session:
        first = upsert_subscriber(session, SubscriberInput("bob@example.com"), NOW, keys=TEST_KEYS)
        assert first is not None
        old_id = first.id
        session.delete(first)
    with transaction(db) as session:
        second = upsert_subscriber(session, SubscriberInput("carol@example.com"), NOW, keys=TEST_KEYS)
        assert second is not None and second.id != old_id


def test_someone_who_unsubscribed_and_confirms_again_resumes_the_series(db: str) -> None:
    campaign = find_campaign("lower-back-pain", ROOT / "campaigns")
    with transaction(db) as session:
        alice = upsert_subscriber(session, SubscriberInput("alice@example.com", "Alice"), NOW, keys=TEST_KEYS)
        assert alice is not None
        enroll(session, campaign, [alice], NOW)
        session.scalars(select(Enrollment)).one().next_step = 2  # two emails went out
        unsubscribe(session, alice, NOW, "one-click")
    later = NOW + timedelta(days=30)
    with transaction(db) as session:
        confirmation = sign_up(
            session,
            SignupData("alice@example.com", "Alice", Answers(terrain="trails", training_for_race=False)),
            WHERE,
            later,
            secret_key=SECRET,
            keys=TEST_KEYS,
        )
        assert confirmation is not None
        payload = read_confirmation_token(SECRET, confirmation.token, later)
        confirm(session, payload, later, ip="192.0.2.7", user_agent="test", campaign=campaign, keys=TEST_KEYS)
    with transaction(db) as session:
        enrollment = session.scalars(select(Enrollment)).one()
        assert enrollment.state == "active" and enrollment.next_step == 2 and enrollment.next_send_at is not None
        assert enrollment.next_send_at >= later


def test_a_strangers_signup_changes_nothing_until_the_owner_confirms(db: str) -> None:
    with transaction(db) as session:
        alice = upsert_subscriber(
            session, SubscriberInput("alice@example.com", "Alice", None, {"terrain": "roads"}), NOW, keys=TEST_KEYS
        )
        assert alice is not None
        unsubscribe(session, alice, NOW, "one-click")
    later = NOW + timedelta(hours=2)
    mallory = SignupData("alice@example.com", "Mallory", Answers(terrain="treadmill", training_for_race=True))
    with transaction(db) as session:
        confirmation = sign_up(session, mallory, WHERE, later, secret_key=SECRET, keys=TEST_KEYS)
        assert confirmation is not None
    with transaction(db) as session:
        row = session.scalars(select(Subscriber)).one()
        assert row.first_name == "Alice" and row.attributes["terrain"] == "roads"
        # Only the address owner, by confirming, applies the answers of that signup.
        confirm(
            session,
            read_confirmation_token(SECRET, confirmation.token, later),
            later,
            ip="x",
            user_agent="x",
            campaign=None,
            keys=TEST_KEYS,
        )
    with transaction(db) as session:
        row = session.scalars(select(Subscriber)).one()
        assert row.first_name == "Mallory" and row.attributes["terrain"] == "treadmill" and row.status == "active"
    assert make_token(SECRET, "confirm", [1, "x"]) != make_token(SECRET, "preferences", [1, "x"])
