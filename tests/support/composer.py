"""Helpers of the newsletter composer's tests (tests/test_console_composer.py and the journey,
tests/test_console_journey.py): readers on the clinic-news topic (some training for a race, one
whose name is an XSS payload), a browser login, and filling the composer like a person."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from cadence.config import Settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.models import Subscriber, SubscriberTopic
from cadence.db.session import transaction
from cadence.operations.subscribers import import_subscribers
from tests.support.console import PASSWORD, XSS_NAME, new_user, set_password
from tests.support.keys import TEST_KEYS
from tests.support.web import WebServer

# Markdown that tries every way in: raw HTML, an event handler, a javascript: link, an iframe.
XSS_BODY = (
    "Hello runners!\n\n<script>alert('body')</script>\n\n<img src=x onerror=\"alert('img')\">\n\n"
    "[a link](javascript:alert('link')) and <iframe src=\"javascript:alert('frame')\"></iframe>\n\n"
    "**Race week** starts now."
)
XSS_SUBJECT = "Race week <img src=x onerror=alert('subject')>"


def readers(settings: Settings, now: Any, *, racing: int, other: int, prefix: str = "reader") -> None:
    """`racing` readers training for a race (one of them named with an XSS payload) and `other`
    readers who are not, all confirmed on the clinic-news topic, in New York."""
    rows = [
        SubscriberInput(
            f"{prefix}-race{i}@example.com",
            XSS_NAME if i == 0 else f"Racer{i}",
            "America/New_York",
            {"training_for_race": "yes", "terrain": "trails" if i % 2 else "road"},
        )
        for i in range(racing)
    ] + [
        SubscriberInput(f"{prefix}-easy{i}@example.com", f"Easy{i}", "America/New_York", {"terrain": "road"})
        for i in range(other)
    ]
    with transaction(settings.database_url) as session:
        import_subscribers(session, rows, now, keys=TEST_KEYS)
        for person in session.scalars(select(Subscriber).where(Subscriber.email.like(f"{prefix}-%"))):
            person.status, person.confirmed_at = "active", now
            session.add(SubscriberTopic(subscriber_id=person.id, topic="clinic-news", joined_at=now))


def browser_login(page: Any, web: WebServer, email: str, role: str, *, new: bool = True) -> None:
    """Log `email` in through the login form (after setting up the account if `new`)."""
    if new:
        with web.client() as client:
            set_password(client, new_user(web, email, role))
    page.goto(web.url("/admin/login"))
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def compose(page: Any, *, name: str, subject: str, preheader: str, body: str) -> None:
    """Fill the content part of a new newsletter's composer, as typed."""
    if name:
        page.locator("#new_id").fill(name)
    page.locator("#subject").fill(subject)
    page.locator("#preheader").fill(preheader)
    page.locator("#body").fill(body)


def for_race_trainees(page: Any) -> None:
    """Audience: the clinic-news topic, readers whose `training_for_race` is yes."""
    page.get_by_label("Clinic news").check()
    page.locator("#rule_attribute-0").fill("training_for_race")
    page.locator("#rule_op-0").select_option("truthy")


def frame_text(page: Any, which: str) -> str:
    """The text the preview frame `which` (phone, desktop) shows now."""
    frame = page.frame_locator(f'iframe[data-preview="{which}"]')
    return str(frame.locator("body").inner_text())


def editor_client(web: WebServer, email: str, role: str = "editor") -> httpx.Client:
    from tests.support.console import session_client

    return session_client(web, email, role)
