"""Every signup form through the JSON API (issue 12): ``/api/subscribe/<form>`` and
``/api/consent/<form>`` serve each form file as ``/subscribe/<form>`` serves its page, with the
form's own body in /openapi.json; and the preference page's pause copy comes from the form the
person signed up on, seen in Chromium. Against a real ``cadence web`` and SMTP sink."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from cadence.core.tokens import make_token
from cadence.db.models import Enrollment, SubscriberTopic
from cadence.db.session import transaction
from cadence.files.forms import load_form
from tests.support.smtpd import SmtpSink
from tests.support.web import CONSENT, REPO, SECRET, WebServer, find_url, parse

NEWS = load_form(REPO / "campaigns" / "forms" / "clinic-news.yaml")


def api(web: WebServer) -> httpx.Client:
    return httpx.Client(base_url=web.url("/api"), headers=web.from_ip(), timeout=10)


def test_a_named_form_signs_up_through_the_api_with_its_own_consent(web: WebServer, web_sink: SmtpSink) -> None:
    client = api(web)
    assert client.get("/consent/clinic-news").json() == {"version": NEWS.consent.version, "text": NEWS.consent.text}
    assert NEWS.consent.version != CONSENT.version
    # The default form's wording does not sign anyone up on another form, and says where to look.
    old_wording = {"email": "news@example.com", "consent_version": CONSENT.version}
    wrong = client.post("/subscribe/clinic-news", json=old_wording)
    assert wrong.status_code == 422 and "GET /api/consent/clinic-news" in str(wrong.json())
    # A question of another form is not part of this one's body.
    extra = {"email": "news@example.com", "consent_version": NEWS.consent.version, "terrain": "trails"}
    assert client.post("/subscribe/clinic-news", json=extra).status_code == 422

    body = {"email": "news@example.com", "first_name": "Noor", "consent_version": NEWS.consent.version}
    sent = client.post("/subscribe/clinic-news", json=body)
    assert sent.status_code == 202 and sent.json()["status"] == "pending_confirmation"
    token = find_url(parse(web_sink.wait_for(1)[-1]), "/confirm/").rsplit("/", 1)[1]
    assert client.post(f"/confirm/{token}").json()["status"] == "confirmed"
    subscriber = web.subscriber("news@example.com")
    assert subscriber is not None
    assert subscriber.consent["form_id"] == "api:subscribe/clinic-news"
    assert subscriber.consent["form"] == "clinic-news" and subscriber.consent["wording_version"] == NEWS.consent.version
    with transaction(web.settings.database_url) as session:
        mine = SubscriberTopic.subscriber_id == subscriber.id
        topics = set(session.scalars(select(SubscriberTopic.topic).where(mine)))
        enrolled = session.scalar(select(Enrollment).where(Enrollment.subscriber_id == subscriber.id))
    assert topics == {"clinic-news"} and enrolled is None  # the news only: no course


def test_the_default_form_answers_under_its_name_too_and_an_unknown_form_is_404(web: WebServer) -> None:
    client = api(web)
    assert client.get("/consent/runners").json()["version"] == CONSENT.version
    body = {"email": "named.runner@example.com", "terrain": "roads", "training_for_race": False}
    done = client.post("/subscribe/runners", json={**body, "consent_version": CONSENT.version})
    assert done.status_code == 202
    subscriber = web.subscriber("named.runner@example.com")
    assert subscriber is not None and subscriber.consent["form_id"] == "api:subscribe/runners"
    missing = client.post("/subscribe/no-such-form", json={**body, "consent_version": CONSENT.version})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/json")


def test_openapi_documents_each_forms_body(web: WebServer) -> None:
    document = httpx.get(web.url("/openapi.json")).json()
    assert {"/api/subscribe", "/api/subscribe/clinic-news", "/api/subscribe/runners"} <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert "terrain" in schemas["SignupIn"]["properties"]  # the default form's name is unchanged
    news = schemas["ClinicNewsSignupIn"]["properties"]
    assert "terrain" not in news and news["consent_version"]["enum"] == [NEWS.consent.version]


def test_the_pause_copy_is_the_forms_own(web: WebServer, browser: Any) -> None:
    news = web.subscriber("news@example.com")
    assert news is not None and news.status == "active"
    runner_id, _, _ = web.add_delivery("pause.runner@example.com")
    with transaction(web.settings.database_url) as session:
        from cadence.db.models import Subscriber

        runner = session.get(Subscriber, runner_id)
        assert runner is not None
        runner.consent = {"form": "runners"}
    page = browser.new_page(extra_http_headers=web.from_ip())
    try:
        page.goto(web.url(f"/p/{make_token(SECRET, 'preferences', news.id)}"))
        card = page.locator("section", has=page.get_by_role("heading", name="Take a break"))
        assert card.locator("p").inner_text() == "Need a break? Pause every email for a few weeks."
        assert "course" not in card.inner_text() and "Racing" not in card.inner_text()
        card.get_by_role("button", name="Pause 2 weeks").click()
        card = page.locator("section", has=page.get_by_role("heading", name="Take a break"))
        assert "They start again by themselves after that." in card.inner_text()

        page.goto(web.url(f"/p/{make_token(SECRET, 'preferences', runner_id)}"))
        card = page.locator("section", has=page.get_by_role("heading", name="Take a break"))
        assert card.locator("p").inner_text().startswith("Racing, travelling or injured?")
    finally:
        page.close()
