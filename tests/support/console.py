"""Helpers of the staff console tests (tests/test_console_web.py): users made by the CLI or the
same operation, logins over HTTP, the seeded ledger, a browser context that records CSP
violations and dialogs next to a CSP-free one for axe-core, and the app's routes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.routing import APIRoute

from cadence.db.models import CampaignState, Delivery, Enrollment, Event, Subscriber, Suppression
from cadence.db.session import transaction
from cadence.operations.staff_accounts import add_user
from tests.support.axe import serious_violations
from tests.support.web import WebServer, csrf_token

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
CADENCE = str(Path(sys.executable).with_name("cadence"))
PASSWORD = "a long and boring password"
XSS_NAME = '<img src=x onerror="alert(1)">Mallory'
XSS_ATTRIBUTES = {"terrain": "<script>alert(2)</script>", "<b onmouseover=alert(3)>race</b>": '"><svg onload=alert(4)>'}


def cli(web: WebServer, *args: str) -> str:
    done = subprocess.run([CADENCE, *args], env={**os.environ, **web.env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def new_user(web: WebServer, email: str, role: str, *, by_cli: bool = False) -> str:
    """A console user and the path of their setup link: from `cadence users add` (`by_cli`) or
    from the same operation in this process (each `cadence` run costs seconds on a busy box)."""
    if by_cli:
        link: str = json.loads(cli(web, "users", "add", email, "--role", role, "--json"))["setup_link"]
        return link.removeprefix(web.base_url)
    with transaction(web.settings.database_url) as session:
        made = add_user(session, email, role, actor="cli:test", now=web.clock.now())
    return made.url(web.base_url).removeprefix(web.base_url)


def set_password(client: httpx.Client, setup_path: str, password: str = PASSWORD) -> None:
    form = client.get(setup_path)
    done = client.post(
        setup_path, data={"csrf_token": csrf_token(form.text), "password": password, "confirm": password}
    )
    assert done.status_code == 303, done.text


def log_in(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    form = client.get("/admin/login")
    return client.post("/admin/login", data={"csrf_token": csrf_token(form.text), "email": email, "password": password})


def session_client(web: WebServer, email: str, role: str) -> httpx.Client:
    """A logged-in httpx client (from its own IP) for a new user with `role`."""
    client = web.client()
    set_password(client, new_user(web, email, role))
    assert log_in(client, email).status_code == 303
    return client


def seed(web: WebServer) -> dict[str, int]:
    """Deliveries over the last days (7 sent, 1 failed), a complaint, a paused campaign, an
    enrollment in a campaign whose file is gone, and a subscriber whose name and answers are
    XSS payloads."""
    now = web.clock.now()
    ids = {}
    with transaction(web.settings.database_url) as session:
        for n, (days_ago, state) in enumerate(
            [
                (0, "sent"),
                (0, "sent"),
                (1, "sent"),
                (3, "sent"),
                (3, "sent"),
                (10, "sent"),
                (29, "sent"),
                (40, "sent"),
                (2, "failed"),
            ]
        ):
            at = now - timedelta(days=days_ago)
            person = Subscriber(
                email=f"runner{n}@example.com",
                email_key=f"runner{n}@example.com",
                first_name=f"Runner{n}",
                attributes={"terrain": "trails"},
                status="active",
                source="test",
                created_at=at,
                updated_at=at,
                soft_bounces=0,
                consent={},
            )
            session.add(person)
            session.flush()
            enrollment = Enrollment(
                subscriber_id=person.id,
                campaign_id="lower-back-pain",
                state="active",
                next_step=1,
                enrolled_at=at,
                end_reason="",
            )
            session.add(enrollment)
            session.flush()
            delivery = Delivery(
                enrollment_id=enrollment.id,
                subscriber_id=person.id,
                campaign_id="lower-back-pain",
                step_id="why-it-hurts",
                step_index=0,
                segment_id="trail+no-race",
                state=state,
                attempts=1,
                due_at=at,
                not_before=at,
                message_id="",
                content_hash="",
                last_error="550 5.1.1 no such user" if state == "failed" else "",
                created_at=at,
                sent_at=at if state == "sent" else None,
            )
            session.add(delivery)
            session.flush()
            ids.setdefault("first", person.id)
            ids["delivery"] = delivery.id
        session.add(
            Event(
                subscriber_id=ids["first"], delivery_id=None, kind="complaint", data={"source": "test"}, created_at=now
            )
        )
        session.add(
            Enrollment(
                subscriber_id=ids["first"],
                campaign_id="retired-course",
                state="active",
                next_step=0,
                enrolled_at=now,
                end_reason="",
            )
        )
        session.add(
            CampaignState(
                campaign_id="spring-newsletter", state="paused", changed_at=now, changed_by="cli:test", note=""
            )
        )
        session.add(
            Suppression(email_hash="ab" * 32, reason="complaint", detail="<script>alert(6)</script>", created_at=now)
        )
        evil = Subscriber(
            email="mallory@example.com",
            email_key="mallory@example.com",
            first_name=XSS_NAME,
            attributes=XSS_ATTRIBUTES,
            status="active",
            source="<i>csv</i>",
            created_at=now,
            updated_at=now,
            soft_bounces=0,
            consent={},
        )
        session.add(evil)
        session.flush()
        session.add(
            Event(
                subscriber_id=evil.id,
                delivery_id=None,
                kind="click",
                data={"url": "javascript:alert(5)"},
                created_at=now,
            )
        )
        ids["evil"] = evil.id
    return ids


class Console:
    """A browser context that records CSP violations and dialogs, and a second one that
    bypasses the CSP (for axe's injected script) sharing its cookies."""

    def __init__(self, browser: Any, web: WebServer) -> None:
        headers = web.from_ip()  # its own client address for the login limits
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, extra_http_headers=headers)
        self.page = self.context.new_page()
        self.csp: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.csp.append(m.text) if "Content Security Policy" in m.text else None)
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.axe_context = browser.new_context(bypass_csp=True, extra_http_headers=headers)
        self.axe_page = self.axe_context.new_page()
        self.axe_page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.web = web

    def accessible(self, script: Path, *, frames: bool = True) -> None:
        """axe on the page the browser shows now, opened in the CSP-free context (`frames`:
        tests/support/axe.serious_violations)."""
        self.axe_context.clear_cookies()
        self.axe_context.add_cookies(self.context.cookies())
        self.axe_page.goto(self.page.url)
        problems = serious_violations(self.axe_page, script, frames=frames)
        assert problems == [], f"{self.page.url}:\n" + "\n".join(problems)

    def shoot(self, name: str) -> None:
        """With $CADENCE_SCREENSHOTS_DIR set (how docs/screenshots/console-*.png are made): the
        page at 1280 and 375 px. Nothing otherwise: screenshots cost seconds."""
        folder = os.environ.get("CADENCE_SCREENSHOTS_DIR")
        if not folder:
            return
        for width, height in ((1280, 900), (375, 812)):
            self.page.set_viewport_size({"width": width, "height": height})
            # A viewport as tall as the page: Chromium paints a frame (the campaign page's email
            # previews) only near the viewport, so a plain full-page shot showed them blank.
            tall = self.page.evaluate("document.documentElement.scrollHeight")
            self.page.set_viewport_size({"width": width, "height": max(height, tall)})
            self._frames_loaded(width)
            self.page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
            self.page.screenshot(path=str(Path(folder) / f"console-{name}-{width}.png"), full_page=True)
        self.page.set_viewport_size({"width": 1280, "height": 900})

    def _frames_loaded(self, width: int) -> None:
        """Wait until every frame the shot shows has loaded: the lazy ones come into view once the
        viewport is as tall as the page; those scrolled off sideways in the preview grid stay
        unloaded, and unseen."""
        for handle in self.page.locator("iframe").element_handles():
            box = handle.bounding_box()
            if box is None or box["x"] + box["width"] > width:
                continue
            frame = handle.content_frame()
            if frame is not None:
                frame.wait_for_url(lambda url: url != "about:blank")
                frame.wait_for_load_state("load")

    def close(self) -> None:
        self.context.close()
        self.axe_context.close()


def api_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Every APIRoute of an app with its full path, also inside included routers (FastAPI 0.16x
    keeps an included router as one route that holds the original)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes, prefix + route.include_context.prefix)
