"""The subscriber operations called directly (no web server), on SQLite and PostgreSQL: a confirmed
signup joins what its form file names (a drip, newsletter topics), the answers are the form's,
and export and erase cover the topics too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cadence.core.tokens import make_token
from cadence.db.migrate import upgrade
from cadence.db.models import Enrollment, Subscriber, SubscriberTopic
from cadence.db.session import transaction
from cadence.errors import InputError, TokenError
from cadence.files.catalog import CampaignCatalog
from cadence.files.forms import load_forms
from cadence.operations.preferences import pause, resume, subscriber_for_preferences, update_answers
from cadence.operations.privacy import erase, export_data
from cadence.operations.signup import (
    Answers,
    Joining,
    SignupContext,
    SignupData,
    confirm,
    joining_for,
    read_confirmation_token,
    sign_up,
    signup_form_name,
)
from tests.support.keys import TEST_KEYS
from tests.support.web import REPO

SECRET = "operations-test-secret-0123456789abcdef"
NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
FORMS = load_forms(REPO / "campaigns" / "forms")
CATALOG = CampaignCatalog(REPO / "campaigns")


def joins(name: str) -> Joining:
    return joining_for(FORMS.get(name, FORMS["runners"]), CATALOG)


def where(form: str) -> SignupContext:
    return SignupContext("192.0.2.30", "test", f"web:subscribe/{form}", "", form=form, consent=FORMS[form].consent)


def signed_up_and_confirmed(database_url: str, address: str, form: str, answers: dict[str, str]) -> int:
    with transaction(database_url) as session:
        sent = sign_up(session, SignupData(address, "", Answers(answers)), where(form), NOW, secret_key=SECRET,
                       keys=TEST_KEYS)
    assert sent is not None and sent.form == form
    payload = read_confirmation_token(SECRET, sent.token, NOW)
    with transaction(database_url) as session:
        assert signup_form_name(session, payload) == form
        confirm(session, payload, NOW, ip="192.0.2.31", user_agent="test", keys=TEST_KEYS, joins=joins)
    return sent.subscriber_id


def test_a_newsletter_only_signup_joins_its_topic_and_no_drip(database_url: str) -> None:
    upgrade(database_url)
    subscriber_id = signed_up_and_confirmed(database_url, "news@example.com", "clinic-news", {})
    with transaction(database_url) as session:
        [topic] = session.scalars(select(SubscriberTopic).where(SubscriberTopic.subscriber_id == subscriber_id))
        assert (topic.topic, topic.source, topic.joined_at) == ("clinic-news", "clinic-news", NOW)
        assert session.scalars(select(Enrollment).where(Enrollment.subscriber_id == subscriber_id)).all() == []
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None and subscriber.status == "active"
        assert subscriber.consent["form"] == "clinic-news" and subscriber.consent["topics"] == ["clinic-news"]
        assert subscriber.consent["wording_version"] == FORMS["clinic-news"].consent.version


def test_a_runner_signup_joins_the_drip_and_the_topic_and_answers_are_the_forms(database_url: str) -> None:
    upgrade(database_url)
    form = FORMS["runners"]
    attributes, errors = form.check_answers({"terrain": "roads", "training_for_race": "no", "race_month": "2027-04"})
    assert errors == {} and attributes["race_month"] == ""  # counts only when training for a race
    subscriber_id = signed_up_and_confirmed(database_url, "runner@example.com", "runners", attributes)
    with transaction(database_url) as session:
        [enrollment] = session.scalars(select(Enrollment).where(Enrollment.subscriber_id == subscriber_id))
        assert enrollment.campaign_id == "lower-back-pain" and enrollment.state == "active"
        topics = session.scalars(select(SubscriberTopic.topic).where(SubscriberTopic.subscriber_id == subscriber_id))
        assert list(topics) == ["clinic-news"]
        subscriber = subscriber_for_preferences(session, SECRET, make_token(SECRET, "preferences", subscriber_id))
        assert form.stored_answers(subscriber.attributes) == {
            "terrain": "roads", "training_for_race": "no", "race_month": "",
        }
        changed, errors = form.check_answers({"terrain": "trails", "training_for_race": "yes", "race_month": "2027-03"})
        update_answers(session, subscriber, changed, NOW)
        until = pause(session, subscriber, 4, NOW)
        assert until == NOW + timedelta(weeks=4)
        with pytest.raises(InputError, match="weeks"):
            pause(session, subscriber, 3, NOW)
        resume(session, subscriber, NOW)
    with transaction(database_url) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None and subscriber.paused_until is None
        assert subscriber.attributes["race_month"] == "2027-03" and subscriber.attributes["terrain"] == "trails"
        exported = export_data(session, subscriber)
        assert [t["topic"] for t in exported["profile"]["topics"]] == ["clinic-news"]
        assert exported["profile"]["topics"][0]["source"] == "runners"
        erase(session, subscriber, NOW, TEST_KEYS)
    with transaction(database_url) as session:
        assert session.get(Subscriber, subscriber_id) is None
        assert not session.scalars(select(SubscriberTopic).where(SubscriberTopic.subscriber_id == subscriber_id)).all()


def test_a_second_confirmed_signup_keeps_the_first_topic_record_and_bad_answers_are_named(database_url: str) -> None:
    upgrade(database_url)
    subscriber_id = signed_up_and_confirmed(database_url, "twice@example.com", "clinic-news", {})
    with transaction(database_url) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        subscriber.status = "unsubscribed"
    later = NOW + timedelta(days=2)
    with transaction(database_url) as session:
        sent = sign_up(session, SignupData("twice@example.com", "", Answers()), where("clinic-news"), later,
                       secret_key=SECRET, keys=TEST_KEYS)
    assert sent is not None
    with transaction(database_url) as session:
        payload = read_confirmation_token(SECRET, sent.token, later)
        confirm(session, payload, later, ip="192.0.2.31", user_agent="test", keys=TEST_KEYS, joins=joins)
        [topic] = session.scalars(select(SubscriberTopic).where(SubscriberTopic.subscriber_id == subscriber_id))
        assert topic.joined_at == NOW  # when they first agreed stays on record
        with pytest.raises(TokenError):
            confirm(session, [subscriber_id, "an-older-signup"], later, ip="", user_agent="", keys=TEST_KEYS)
    _, errors = FORMS["runners"].check_answers({"terrain": "moon", "training_for_race": "maybe", "race_month": "soon"})
    assert set(errors) == {"terrain", "training_for_race", "race_month"}
    assert errors["terrain"] == "Choose where you run most."
