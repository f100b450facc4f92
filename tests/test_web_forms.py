"""Signup forms are data: a newsletter-only form file is served at ``/subscribe/clinic-news`` and,
signed up and confirmed in a real browser, puts the person on its topic and in no drip; bad form
and sender files are refused by the installed ``cadence campaigns validate`` naming the field."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cadence.db.models import Enrollment, SubscriberTopic
from cadence.db.session import transaction
from tests.support.cluster import cadence_env
from tests.support.services import unavailable
from tests.support.smtpd import SmtpSink
from tests.support.web import REPO, WebServer, body, find_url, parse

CADENCE = str(Path(sys.executable).with_name("cadence"))  # the installed entry point
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser_page() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable("Chromium at /usr/bin/chromium", "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser.new_context(viewport={"width": 375, "height": 812}).new_page()
        finally:
            browser.close()


def test_the_newsletter_form_signs_up_confirms_and_joins_its_topic_only(
    web: WebServer, web_sink: SmtpSink, browser_page: Any
) -> None:
    page = browser_page
    page.goto(web.url("/subscribe/clinic-news"))
    page.get_by_role("heading", name="Clinic news").wait_for()
    assert page.get_by_role("radio").count() == 0  # no questions on this form
    assert "clinic news from Precision Clinical Bodywork" in page.locator("#consent-text").inner_text()
    assert "1801 W Main St" in page.locator("footer").inner_text()  # the sender file's address
    page.get_by_label("Email address").fill("Reader@Example.com")
    page.get_by_role("button", name="Sign me up").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()

    [confirmation] = web_sink.wait_for(1)
    email = parse(confirmation)
    assert email["From"] == "Precision Clinical Bodywork <care@precisionbodywork.example>"
    assert "occasional clinic news" in body(email, "plain") and "course" not in body(email, "plain")
    page.goto(find_url(email, "/confirm/"))
    page.get_by_text("Confirm that you want occasional clinic news").wait_for()
    page.get_by_role("button", name="Yes, subscribe me").click()
    page.get_by_role("heading", name="You're subscribed").wait_for()
    preferences = page.get_by_role("link", name="Your email preferences").get_attribute("href")

    subscriber = web.subscriber("reader@example.com")
    assert subscriber is not None and subscriber.status == "active"
    assert subscriber.consent["form_id"] == "web:subscribe/clinic-news"
    assert subscriber.consent["page_url"] == web.url("/subscribe/clinic-news")
    with transaction(web.settings.database_url) as session:
        topics = session.scalars(select(SubscriberTopic).where(SubscriberTopic.subscriber_id == subscriber.id)).all()
        assert [(t.topic, t.source) for t in topics] == [("clinic-news", "clinic-news")]
        assert not session.scalars(select(Enrollment).where(Enrollment.subscriber_id == subscriber.id)).all()
    assert web.drive() == 0  # no drip email follows

    # Its preference page has no questions to answer; an unknown form is a 404.
    page.goto(web.url(preferences))
    page.get_by_role("heading", name="Your email preferences").wait_for()
    assert page.get_by_role("button", name="Save answers").count() == 0
    assert httpx.get(web.url("/subscribe/no-such-form")).status_code == 404
    assert "Send me the course" in httpx.get(web.url("/subscribe/runners")).text


# ---------------------------------------------------------------------------- validate

BAD_FORMS = {
    # file name: (its text, what the error must say)
    "one-choice.yaml": (
        "page: {title: t, heading: h, confirm: c}\n"
        "consent: {text: 'Yes, email me the clinic news please.', topics: [clinic-news]}\n"
        "joins: {topics: [clinic-news]}\n"
        "questions:\n"
        "  - id: colour\n"
        "    label: Colour?\n"
        "    choices:\n"
        "      - {value: red, label: Red}\n",
        ":7: error: questions.0.choices: a choice question needs at least two choices",
    ),
    "unconsented.yaml": (
        "page: {title: t, heading: h, confirm: c}\n"
        "consent: {text: 'Yes, email me the clinic news please.'}\n"
        "joins: {topics: [clinic-news]}\n",
        ":2: error: consent.topics: the form joins clinic-news but its consent does not name it",
    ),
    "unknown-topic.yaml": (
        "page: {title: t, heading: h, confirm: c}\n"
        "consent: {text: 'Yes, email me the clinic gossip please.', topics: [gossip]}\n"
        "joins: {topics: [gossip]}\n",
        ":3: error: joins.topics: unknown topic 'gossip' (known: clinic-news)",
    ),
    "typo.yaml": (
        "page: {title: t, heading: h, confirm: c}\n"
        "consent: {text: 'Yes, email me the course please, thank you.'}\n"
        "joins: {drip: lower-back-pian}\n",
        ":3: error: joins.drip: no campaign 'lower-back-pian' (known: lower-back-pain)",
    ),
    "no-copy.yaml": (
        "consent: {text: 'Yes, email me the course please, thank you.'}\njoins: {drip: lower-back-pain}\n",
        ": error: page: Field required",
    ),
}


def validate(campaigns: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = cadence_env(tmp_path / "data", CADENCE_CAMPAIGNS_DIR=str(campaigns), COLUMNS="300")
    done = subprocess.run([CADENCE, "campaigns", "validate"], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def campaigns_copy(tmp_path: Path) -> Path:
    campaigns = tmp_path / "campaigns"
    (campaigns / "forms").mkdir(parents=True)
    for name in ("lower-back-pain.yaml", "sender.yaml"):
        shutil.copy(REPO / "campaigns" / name, campaigns / name)
    shutil.copy(REPO / "campaigns" / "forms" / "runners.yaml", campaigns / "forms" / "runners.yaml")
    return campaigns


def test_validate_names_the_file_line_and_field_of_every_bad_form(tmp_path: Path) -> None:
    campaigns = campaigns_copy(tmp_path)
    for name, (text, _) in BAD_FORMS.items():
        (campaigns / "forms" / name).write_text(text, encoding="utf-8")
    # A choice the drip's rule names no longer exists: the rule can never match.
    runners = campaigns / "forms" / "runners.yaml"
    runners.write_text(runners.read_text().replace("value: trails,", "value: trail,"), encoding="utf-8")
    done = validate(campaigns, tmp_path)
    assert done.returncode == 1, done
    out = " ".join(done.stdout.split())  # Rich may wrap; compare without line breaks
    for name, (_, message) in BAD_FORMS.items():
        assert f"forms/{name}{message}" in out, (name, out)
    assert (
        "forms/runners.yaml:45: error: question 'terrain': segment rule 'terrain eq trails' of 'lower-back-pain' "
        "compares to 'trails', which no choice gives" in out
    )
    assert "6 problem(s) in the signup forms or the sender file" in out


def test_validate_refuses_a_sender_file_without_a_postal_address_and_passes_the_shipped_files(
    tmp_path: Path,
) -> None:
    assert validate(REPO / "campaigns", tmp_path).returncode == 0
    campaigns = campaigns_copy(tmp_path)
    sender = campaigns / "sender.yaml"
    sender.write_text(
        "\n".join(line for line in sender.read_text().splitlines() if not line.startswith("postal_address")),
        encoding="utf-8",
    )
    done = validate(campaigns, tmp_path)
    assert done.returncode == 1
    assert "postal_address: is missing, and every commercial email must carry your postal address" in " ".join(
        done.stdout.split()
    )
