"""Postmark and Mailgun webhooks through FastAPI's TestClient and a real SQLite database:
authentication, replay protection, and every valid event applied exactly once."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cadence.config import Settings, load_settings
from cadence.core.subscriber_fields import email_hash
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Event, Subscriber, Suppression
from cadence.db.session import transaction
from cadence.web.webhooks import router
from tests.support.cluster import cadence_env

NOW = datetime(2026, 3, 10, 9, tzinfo=UTC)
KEY = "mailgun-signing-key-for-tests"
AUTH = ("postmark", "hook-password")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    env = cadence_env(
        tmp_path,
        CADENCE_DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}",
        CADENCE_POSTMARK_WEBHOOK_USER=AUTH[0],
        CADENCE_POSTMARK_WEBHOOK_PASSWORD=AUTH[1],
        CADENCE_MAILGUN_WEBHOOK_SIGNING_KEY=KEY,
    )
    settings = load_settings(env)
    upgrade(settings.database_url)
    with transaction(settings.database_url) as session:
        for n, address in enumerate(("gone@example.org", "full@example.net", "fan@example.com"), start=1):
            person = Subscriber(email=address, email_key=address, status="active", created_at=NOW, updated_at=NOW)
            session.add(person)
            session.flush()
            session.add(
                Delivery(
                    id=n,
                    subscriber_id=person.id,
                    campaign_id="c",
                    step_id="s",
                    step_index=0,
                    due_at=NOW,
                    not_before=NOW,
                    created_at=NOW,
                    provider_message_id=f"pm-{n}",
                )
            )
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(router)
    app.state.cadence = SimpleNamespace(settings=settings, now=lambda: NOW)  # as web.state.WebState
    with TestClient(app) as test_client:
        yield test_client


def status_of(settings: Settings, address: str) -> tuple[str, int]:
    with transaction(settings.database_url) as session:
        person = session.scalars(select(Subscriber).where(Subscriber.email_key == address)).one()
        return person.status, person.soft_bounces


def rows(settings: Settings, model: type[Any]) -> int:
    with transaction(settings.database_url) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def suppressed(settings: Settings) -> dict[str, str]:
    with transaction(settings.database_url) as session:
        return {s.email_hash: s.reason for s in session.scalars(select(Suppression))}


# ---------------------------------------------------------------------------- Postmark


def postmark_bounce(**fields: Any) -> dict[str, Any]:
    """Shaped like Postmark's bounce webhook example (postmarkapp.com/developer/webhooks)."""
    body = {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "MessageID": "pm-1",
        "Metadata": {"delivery_id": "1", "campaign": "c"},
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "gone@example.org",
        "From": "coach@news.cadence.example",
        "BouncedAt": "2026-03-10T08:59:54.9070259Z",
        "Inactive": True,
        "MessageStream": "outbound",
    }
    body.update(fields)
    return body


def test_a_postmark_hard_bounce_suppresses_the_address_and_names_the_delivery(
    client: TestClient, settings: Settings
) -> None:
    answer = client.post("/webhooks/postmark", json=postmark_bounce(), auth=AUTH)
    assert answer.status_code == 200 and answer.json() == {"status": "applied", "kind": "hard_bounce"}
    assert suppressed(settings) == {email_hash("gone@example.org"): "hard_bounce"}
    assert status_of(settings, "gone@example.org") == ("bounced", 0)
    with transaction(settings.database_url) as session:
        event = session.scalars(select(Event)).one()
        assert (event.delivery_id, event.data["occurred_at"]) == (1, "2026-03-10T08:59:54.907025+00:00")


def test_a_postmark_spam_complaint_suppresses_as_a_complaint(client: TestClient, settings: Settings) -> None:
    body = postmark_bounce(
        RecordType="SpamComplaint", ID=42, Type="SpamComplaint", Email="fan@example.com", MessageID="pm-3", Metadata={}
    )
    assert client.post("/webhooks/postmark", json=body, auth=AUTH).json()["status"] == "applied"
    assert suppressed(settings) == {email_hash("fan@example.com"): "complaint"}
    assert status_of(settings, "fan@example.com")[0] == "complained"
    with transaction(settings.database_url) as session:
        assert session.scalars(select(Event.delivery_id)).one() == 3  # found by Postmark's MessageID


def test_postmark_soft_bounces_count_and_a_manual_suppression_unsubscribes(
    client: TestClient, settings: Settings
) -> None:
    soft = postmark_bounce(ID=5, Type="SoftBounce", Email="full@example.net", MessageID="pm-2", Metadata={})
    assert client.post("/webhooks/postmark", json=soft, auth=AUTH).json()["kind"] == "soft_bounce"
    assert status_of(settings, "full@example.net") == ("active", 1)
    change = {
        "RecordType": "SubscriptionChange",
        "MessageID": "pm-3",
        "Recipient": "fan@example.com",
        "ChangedAt": "2026-03-10T08:00:00Z",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Metadata": {},
    }
    assert client.post("/webhooks/postmark", json=change, auth=AUTH).json()["kind"] == "unsubscribe"
    assert status_of(settings, "fan@example.com")[0] == "unsubscribed"
    assert not suppressed(settings)


def test_wrong_or_missing_basic_auth_is_401_and_changes_nothing(client: TestClient, settings: Settings) -> None:
    for auth in (("postmark", "guess"), ("someone", AUTH[1]), None):
        answer = client.post("/webhooks/postmark", json=postmark_bounce(), auth=auth)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Basic")
    assert rows(settings, Event) == 0 and not suppressed(settings)


def test_an_unconfigured_postmark_webhook_refuses_everything(client: TestClient, settings: Settings) -> None:
    client.app.state.cadence.settings = replace(settings, postmark_webhook_password="")  # type: ignore[attr-defined]
    assert client.post("/webhooks/postmark", json=postmark_bounce(), auth=("postmark", "")).status_code == 503


def test_the_same_postmark_event_twice_is_one_event_and_one_suppression(client: TestClient, settings: Settings) -> None:
    first = client.post("/webhooks/postmark", json=postmark_bounce(), auth=AUTH)
    second = client.post("/webhooks/postmark", json=postmark_bounce(), auth=AUTH)
    assert (first.json()["status"], second.json()["status"]) == ("applied", "duplicate")
    assert second.status_code == 200  # so Postmark stops retrying
    assert rows(settings, Event) == 1 and rows(settings, Suppression) == 1


def test_malformed_postmark_bodies_are_400_and_other_record_types_are_ignored(client: TestClient) -> None:
    assert client.post("/webhooks/postmark", content=b"{not json", auth=AUTH).status_code == 400
    assert client.post("/webhooks/postmark", json=[1, 2], auth=AUTH).status_code == 400
    assert client.post("/webhooks/postmark", json=postmark_bounce(Email=None), auth=AUTH).status_code == 400
    opened = client.post("/webhooks/postmark", json={"RecordType": "Open", "MessageID": "pm-1"}, auth=AUTH)
    assert opened.status_code == 200 and opened.json()["status"] == "ignored"


# ---------------------------------------------------------------------------- Mailgun


def mailgun(
    event: dict[str, Any], *, token: str | None = None, timestamp: int | None = None, key: str = KEY
) -> dict[str, Any]:
    """A signed Mailgun webhook body (documentation.mailgun.com, "Securing Webhooks")."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or hashlib.sha256(f"{time.time_ns()}{event}".encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event}


def failed(severity: str = "permanent", recipient: str = "gone@example.org", **fields: Any) -> dict[str, Any]:
    event = {
        "event": "failed",
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": 1773133194.329574,
        "severity": severity,
        "reason": "bounce" if severity == "permanent" else "generic",
        "recipient": recipient,
        "user-variables": {"delivery_id": "1"},
        "message": {"headers": {"message-id": "d1.0123456789abcdef@news.cadence.example"}},
        "delivery-status": {"code": 550, "message": "5.1.1 No such user", "description": ""},
    }
    event.update(fields)
    return event


def test_a_signed_mailgun_permanent_failure_suppresses(client: TestClient, settings: Settings) -> None:
    answer = client.post("/webhooks/mailgun", json=mailgun(failed()))
    assert answer.status_code == 200 and answer.json() == {"status": "applied", "kind": "hard_bounce"}
    assert suppressed(settings) == {email_hash("gone@example.org"): "hard_bounce"}
    with transaction(settings.database_url) as session:
        kinds = {kind: delivery for kind, delivery in session.execute(select(Event.kind, Event.delivery_id))}
    assert kinds == {"hard_bounce": 1, "webhook_token": None}


def test_mailgun_temporary_failures_complaints_and_unsubscribes(client: TestClient, settings: Settings) -> None:
    soft = failed("temporary", "full@example.net", id="t1", **{"user-variables": {"delivery_id": "2"}})
    complaint = {"event": "complained", "id": "c1", "timestamp": 1773133200.5, "recipient": "fan@example.com"}
    unsubscribed = {"event": "unsubscribed", "id": "u1", "timestamp": 1773133201.5, "recipient": "fan@example.com"}
    for body in (soft, unsubscribed, complaint):
        assert client.post("/webhooks/mailgun", json=mailgun(body)).json()["status"] == "applied"
    assert status_of(settings, "full@example.net") == ("active", 1)
    assert suppressed(settings) == {email_hash("fan@example.com"): "complaint"}


def test_a_bad_mailgun_signature_or_a_stale_timestamp_is_403(client: TestClient, settings: Settings) -> None:
    assert client.post("/webhooks/mailgun", json=mailgun(failed(), key="not-the-key")).status_code == 403
    forged = mailgun(failed())
    forged["signature"]["timestamp"] = str(int(forged["signature"]["timestamp"]) + 1)
    assert client.post("/webhooks/mailgun", json=forged).status_code == 403
    stale = client.post("/webhooks/mailgun", json=mailgun(failed(), timestamp=int(time.time()) - 6 * 60))
    assert stale.status_code == 403 and "from now" in stale.json()["detail"]
    assert rows(settings, Event) == 0 and not suppressed(settings)


def test_a_replayed_mailgun_token_is_refused_even_with_another_event(client: TestClient, settings: Settings) -> None:
    body = mailgun(failed(), token="t" * 50)
    assert client.post("/webhooks/mailgun", json=body).status_code == 200
    assert client.post("/webhooks/mailgun", json=body).status_code == 403
    # The HMAC covers timestamp and token only: a captured pair must not carry a new event.
    other = dict(body, **{"event-data": failed(recipient="fan@example.com", id="x2")})
    assert client.post("/webhooks/mailgun", json=other).status_code == 403
    assert rows(settings, Event) == 2 and suppressed(settings) == {email_hash("gone@example.org"): "hard_bounce"}


def test_a_mailgun_retry_with_a_fresh_signature_is_a_duplicate(client: TestClient, settings: Settings) -> None:
    answers = [client.post("/webhooks/mailgun", json=mailgun(failed())).json()["status"] for _ in range(2)]
    assert answers == ["applied", "duplicate"]
    with transaction(settings.database_url) as session:
        assert session.scalar(select(func.count()).where(Event.kind == "hard_bounce")) == 1
    assert rows(settings, Suppression) == 1


def test_malformed_mailgun_bodies_are_400(client: TestClient) -> None:
    assert client.post("/webhooks/mailgun", content=b"token=a&timestamp=1").status_code == 400
    assert client.post("/webhooks/mailgun", json={"signature": {}, "event-data": failed()}).status_code == 400
    assert client.post("/webhooks/mailgun", json=mailgun(failed(severity="sometimes"))).status_code == 400
    assert client.post("/webhooks/mailgun", json=mailgun({"id": "x"})).status_code == 400
    assert client.post("/webhooks/mailgun", json=mailgun({"event": "opened", "id": "o", "timestamp": 1})).json() == {
        "status": "ignored",
        "kind": "ignored",
    }


def test_the_real_web_app_serves_the_webhooks(settings: Settings) -> None:
    from cadence.web.app import create_app

    with TestClient(create_app(settings)) as app_client:
        assert app_client.post("/webhooks/postmark", json=postmark_bounce()).status_code == 401
        assert app_client.post("/webhooks/mailgun", json=mailgun(failed())).json()["status"] == "applied"
    assert suppressed(settings) == {email_hash("gone@example.org"): "hard_bounce"}
