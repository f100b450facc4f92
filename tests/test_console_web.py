"""The staff console (issue 14) against the real ``cadence web`` and headless Chromium: a user set
up with the CLI's link logs in and sees the seeded numbers; roles, CSRF, logout, disable, the
login limit and stored XSS are checked on the server with direct requests; axe-core scans every
page. One web server and one browser for the module."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from cadence.config import load_settings
from cadence.db.migrate import upgrade
from cadence.db.models import SubscriberTag
from cadence.db.session import transaction
from cadence.operations.staff_accounts import add_user, complete_setup
from cadence.web.app import create_app
from cadence.web.console.auth import Access
from tests.support.axe import axe_script
from tests.support.cluster import ROOT
from tests.support.console import (
    PASSWORD,
    XSS_ATTRIBUTES,
    XSS_NAME,
    Console,
    api_routes,
    cli,
    log_in,
    new_user,
    seed,
    session_client,
    set_password,
)
from tests.support.web import WebServer, csrf_token, fresh_ip

# Every /admin route and the level its Access dependency demands. A new route must be added here,
# or test_every_admin_route_declares_its_role fails.
ROUTES = {
    ("GET", "/admin/login"): "public",
    ("POST", "/admin/login"): "public",
    ("GET", "/admin/setup/{token}"): "public",
    ("POST", "/admin/setup/{token}"): "public",
    ("GET", "/admin/login/code"): "pending",
    ("POST", "/admin/login/code"): "pending",
    ("POST", "/admin/logout"): "pending",
    ("GET", "/admin"): "viewer",
    ("GET", "/admin/subscribers"): "viewer",
    ("GET", "/admin/subscribers/{subscriber_id}"): "viewer",
    ("GET", "/admin/audit"): "viewer",
    ("GET", "/admin/suppressions"): "viewer",
    ("GET", "/admin/account"): "viewer",
    ("POST", "/admin/account/password"): "viewer",
    ("POST", "/admin/account/totp"): "viewer",
    ("POST", "/admin/account/totp/remove"): "viewer",
    ("POST", "/admin/subscribers/{subscriber_id}/tags"): "editor",
    ("POST", "/admin/subscribers/{subscriber_id}/tags/remove"): "editor",
    ("POST", "/admin/subscribers/{subscriber_id}/unsubscribe"): "editor",
    ("POST", "/admin/subscribers/{subscriber_id}/suppress"): "editor",
    ("POST", "/admin/subscribers/{subscriber_id}/unsuppress"): "editor",
    ("POST", "/admin/subscribers/{subscriber_id}/export"): "editor",
    ("POST", "/admin/subscribers/{subscriber_id}/erase"): "admin",
    ("GET", "/admin/campaigns"): "viewer",
    ("GET", "/admin/campaigns/{campaign_id}"): "viewer",
    ("GET", "/admin/campaigns/{campaign_id}/preview/{step}/{segment_id}"): "viewer",
    ("POST", "/admin/campaigns/{campaign_id}/pause"): "editor",
    ("POST", "/admin/campaigns/{campaign_id}/resume"): "editor",
    ("POST", "/admin/campaigns/{campaign_id}/cancel"): "editor",
    ("POST", "/admin/campaigns/{campaign_id}/test"): "editor",
    ("POST", "/admin/campaigns/{campaign_id}/schedule"): "editor",
    ("GET", "/admin/newsletters"): "viewer",
    ("GET", "/admin/newsletters/new"): "editor",
    ("POST", "/admin/newsletters/new"): "editor",
    ("GET", "/admin/newsletters/{draft_id}"): "viewer",
    ("POST", "/admin/newsletters/{draft_id}"): "editor",
    ("GET", "/admin/newsletters/{draft_id}/preview"): "viewer",
    ("POST", "/admin/newsletters/{draft_id}/test"): "editor",
    ("POST", "/admin/newsletters/{draft_id}/schedule"): "editor",
    ("POST", "/admin/newsletters/preview"): "editor",
    ("POST", "/admin/newsletters/count"): "editor",
    ("GET", "/admin/users"): "admin",
    ("POST", "/admin/users"): "admin",
    ("POST", "/admin/users/{user_id}/disable"): "admin",
    ("POST", "/admin/users/{user_id}/reset"): "admin",
    ("GET", "/admin/imports"): "viewer",
    ("POST", "/admin/imports"): "editor",
    ("GET", "/admin/imports/{job_id}"): "viewer",
    ("GET", "/admin/imports/{job_id}/progress.json"): "viewer",
    ("GET", "/admin/imports/{job_id}/errors.csv"): "editor",
    ("POST", "/admin/imports/{job_id}/start"): "editor",
    ("POST", "/admin/imports/{job_id}/cancel"): "editor",
    ("POST", "/admin/imports/{job_id}/resume"): "editor",
}
PATH_PARAMS = {
    "user_id": 1,
    "token": "x",
    "campaign_id": "lower-back-pain",
    "step": 1,
    "segment_id": "trail",
    "draft_id": "x",
    "job_id": 1,
}


@pytest.fixture(scope="module")
def seeded(web: WebServer) -> dict[str, int]:
    return seed(web)


def test_every_admin_route_declares_its_role(web: WebServer) -> None:
    app = create_app(web.settings)
    found = {}
    for path, route in api_routes(app.routes):
        if path.startswith("/admin"):
            levels = [d.call.role for d in route.dependant.dependencies if isinstance(d.call, Access)]
            for method in route.methods - {"HEAD"}:
                assert len(levels) == 1, f"{method} {path} has no Access dependency"
                found[(method, path)] = levels[0]
    assert found == ROUTES


def test_without_a_session_pages_send_to_login_and_actions_are_refused(web: WebServer, seeded: dict[str, int]) -> None:
    client = web.client()
    token = csrf_token(client.get("/admin/login").text)  # a valid login-form token: not enough
    for (method, path), level in ROUTES.items():
        if level == "public":
            continue
        url = path.format(**PATH_PARAMS, subscriber_id=seeded["first"])
        answer = client.request(method, url, data={"csrf_token": token, "tag": "vip"} if method == "POST" else None)
        if method == "GET":
            # (a composer page adds ?next= to come back to: tests/test_console_composer.py)
            assert (answer.status_code, answer.headers.get("location", "").split("?")[0]) == (303, "/admin/login"), url
        else:
            assert answer.status_code == 403, url
    with transaction(web.settings.database_url) as session:
        assert session.scalars(select(SubscriberTag)).all() == []


def test_a_viewer_is_refused_every_editor_and_admin_route_by_the_server(web: WebServer, seeded: dict[str, int]) -> None:
    viewer = session_client(web, "vera.viewer@clinic.example", "viewer")
    page = viewer.get(f"/admin/subscribers/{seeded['first']}")
    assert page.status_code == 200 and "Add a tag" not in page.text  # no button, and yet:
    token = csrf_token(page.text)
    for (method, path), level in ROUTES.items():
        if level not in ("editor", "admin"):
            continue
        url = path.format(**PATH_PARAMS, subscriber_id=seeded["first"])
        answer = viewer.request(
            method,
            url,
            data={"csrf_token": token, "tag": "vip", "email": "x@y.example", "confirm": "lower-back-pain"}
            if method == "POST"
            else None,
        )
        assert answer.status_code == 403, f"{method} {url}: {answer.status_code}"
        assert "needs the" in answer.text
    with transaction(web.settings.database_url) as session:
        assert session.scalars(select(SubscriberTag)).all() == []

    editor = session_client(web, "ed.editor@clinic.example", "editor")
    token = csrf_token(editor.get(f"/admin/subscribers/{seeded['first']}").text)
    tagged = editor.post(f"/admin/subscribers/{seeded['first']}/tags", data={"csrf_token": token, "tag": "VIP"})
    assert tagged.status_code == 303
    assert (
        editor.post(f"/admin/subscribers/{seeded['first']}/tags", data={"tag": "other"}).status_code == 403
    )  # no CSRF
    bad = editor.post(f"/admin/subscribers/{seeded['first']}/tags", data={"csrf_token": "x" * 43, "tag": "other"})
    assert bad.status_code == 403 and "Form expired" in bad.text
    assert editor.get("/admin/users").status_code == 403
    audit = editor.get("/admin/audit?actor=user:ed.editor@clinic.example").text
    assert "subscribers.tag" in audit and "vip" in audit


def test_logout_and_disable_end_sessions_on_the_server(web: WebServer) -> None:
    client = session_client(web, "lou@clinic.example", "viewer")
    cookie = dict(client.cookies)
    assert client.get("/admin").status_code == 200
    token = csrf_token(client.get("/admin/account").text)
    assert client.post("/admin/logout", data={"csrf_token": token}).headers["location"] == "/admin/login?done=logout"
    replay = httpx.Client(base_url=web.base_url, cookies=cookie, headers=web.from_ip())
    assert replay.get("/admin").status_code == 303  # the old cookie opens nothing

    other = session_client(web, "dee@clinic.example", "editor")
    assert other.get("/admin").status_code == 200
    cli(web, "users", "disable", "dee@clinic.example")
    assert other.get("/admin").headers["location"] == "/admin/login"
    assert log_in(web.client(), "dee@clinic.example").status_code == 401


def test_login_is_limited_per_account_with_the_same_answer_for_unknown_addresses(web: WebServer) -> None:
    set_password(web.client(), new_user(web, "rita@clinic.example", "viewer"))  # never logged in
    answers = {}
    for email in ("rita@clinic.example", "nobody@clinic.example"):
        client = web.client()  # a fresh address each: the account counter alone must stop it
        statuses = [log_in(client, email, "wrong password guess").status_code for _ in range(5)]
        assert statuses == [401] * 5
        limited = log_in(client, email, PASSWORD)  # even the right password, now
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        answers[email] = re.sub(r'value="[^"]*"', "", limited.text).replace(email, "EMAIL")
    assert answers["rita@clinic.example"] == answers["nobody@clinic.example"]
    assert "Too many login attempts" in answers["nobody@clinic.example"]
    ip = fresh_ip()  # and per address: 20 tries on 20 accounts from one IP, then no more
    client = web.client(ip)
    statuses = [log_in(client, f"guess{n}@clinic.example", "x").status_code for n in range(21)]
    assert statuses == [401] * 20 + [429]


def test_a_code_app_adds_a_second_step_to_login(web: WebServer) -> None:
    client = session_client(web, "tom@clinic.example", "viewer")
    page = client.get("/admin/account").text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)  # type: ignore[union-attr]
    totp = pyotp.TOTP(secret)
    now = web.clock.now()
    on = client.post(
        "/admin/account/totp",
        data={"csrf_token": csrf_token(page), "secret": secret, "code": totp.at(now), "current_password": PASSWORD},
    )
    assert on.headers["location"] == "/admin/account?done=totp-on"
    fresh = web.client()
    assert log_in(fresh, "tom@clinic.example").headers["location"] == "/admin/login/code"
    assert fresh.get("/admin").headers["location"] == "/admin/login"  # half-way opens nothing
    form = fresh.get("/admin/login/code").text
    replayed = fresh.post("/admin/login/code", data={"csrf_token": csrf_token(form), "code": totp.at(now)})
    assert replayed.status_code == 401 and "not right" in replayed.text
    later = totp.at(now + timedelta(seconds=30))  # the next step (one step of drift is allowed)
    done = fresh.post("/admin/login/code", data={"csrf_token": csrf_token(replayed.text), "code": later})
    assert done.headers["location"] == "/admin" and fresh.get("/admin").status_code == 200


def test_the_console_can_be_switched_off(web: WebServer) -> None:
    settings = load_settings({**web.env, "CADENCE_ADMIN_ENABLED": "false"})
    paths = [path for path, _ in api_routes(create_app(settings).routes)]
    assert "/subscribe" in paths and not [p for p in paths if p.startswith("/admin")]  # /admin answers 404


def test_with_an_https_base_url_the_session_cookie_is_host_prefixed_and_secure(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "CADENCE_DATA_DIR": str(tmp_path),
            "CADENCE_BASE_URL": "https://console.clinic.example",
            "CADENCE_SECRET_KEY": "a-secret-key-for-this-test-only",
            "CADENCE_CAMPAIGNS_DIR": str(ROOT / "campaigns"),  # the signup forms and sender file
        }
    )
    upgrade(settings.database_url)
    with transaction(settings.database_url) as session:
        link = add_user(session, "ann@clinic.example", "viewer", actor="cli:test", now=datetime.now(UTC))
    with transaction(settings.database_url) as session:
        complete_setup(session, link.token, PASSWORD, PASSWORD, now=datetime.now(UTC))

    async def log_in_over_https() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as client:
            form = await client.get("/admin/login")
            data = {"csrf_token": csrf_token(form.text), "email": "ann@clinic.example", "password": PASSWORD}
            return form, await client.post("/admin/login", data=data)

    form, done = asyncio.run(log_in_over_https())
    csrf_cookie = form.headers["set-cookie"]
    assert csrf_cookie.startswith("__Host-cadence_console_csrf=") and "samesite=strict" in csrf_cookie.lower()
    assert "secure" in csrf_cookie.lower() and "httponly" in csrf_cookie.lower()
    assert done.status_code == 303
    cookie = done.headers["set-cookie"]
    assert cookie.startswith("__Host-cadence_session=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert attributes == {"httponly", "path", "samesite", "secure"} and "Path=/;" in cookie + ";"
    assert "samesite=lax" in cookie.lower() and "domain" not in cookie.lower() and "max-age" not in cookie.lower()


def test_in_chromium_a_new_admin_sets_a_password_logs_in_and_sees_the_numbers(
    web: WebServer, seeded: dict[str, int], browser: Any
) -> None:
    script = axe_script()
    console = Console(browser, web)
    page = console.page
    try:
        setup = new_user(web, "ann.admin@clinic.example", "admin", by_cli=True)
        page.goto(web.url(setup))
        console.accessible(script)
        console.shoot("setup")
        page.get_by_label("New password").fill(PASSWORD)
        page.get_by_label("The same password again").fill(PASSWORD)
        page.get_by_role("button", name="Set password").click()
        page.get_by_text("Your password is set").wait_for()
        console.accessible(script)
        console.shoot("login")

        # Keyboard only: the skip link comes first, the labelled fields, Enter submits.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
        page.get_by_label("Email address").focus()
        page.keyboard.type("ann.admin@clinic.example")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Dashboard").wait_for()
        console.accessible(script)
        console.shoot("dashboard")

        # 7 sent in the last 30 days (not the one 40 days ago), 1 complaint: 14.29 % > 0.3 %.
        assert page.locator("#sent-total").inner_text() == "7"
        assert page.locator("svg.chart rect.bar").count() == 30
        stats = page.locator(".stats").inner_text()
        assert "14.29 %" in stats and "over the limit" in stats
        attention = page.locator(".attention").inner_text()
        assert "1 delivery failed in the last 30 days" in attention
        assert "Campaign retired-course: its file is missing, 1 person still enrolled" in attention
        assert "Campaign spring-newsletter is paused" in attention
        campaigns = page.locator("#campaigns").inner_text()
        assert re.search(r"lower-back-pain\s+running", campaigns)
        page.get_by_text("The numbers per day").click()
        day = web.clock.now().date().isoformat()
        assert page.locator("#sent-per-day tr", has_text=day).inner_text().split() == [day, "2"]

        page.get_by_role("link", name="Subscribers").click()
        page.get_by_label("Search by email address or first name").fill("runner3")
        page.get_by_role("button", name="Search").click()
        page.get_by_text("1 subscriber match").wait_for()
        console.accessible(script)
        console.shoot("subscribers")
        page.get_by_role("link", name="runner3@example.com").click()
        page.get_by_role("heading", name="Timeline").wait_for()
        assert "why-it-hurts" in page.locator("#timeline").inner_text()
        page.get_by_label("Add a tag").fill("met-at-expo")
        page.get_by_role("button", name="Add tag").click()
        page.get_by_role("button", name="Remove tag met-at-expo").wait_for()
        console.accessible(script)
        console.shoot("subscriber")

        # Stored XSS: the payloads show as text, run nothing, with and without the CSP.
        page.goto(web.url(f"/admin/subscribers/{seeded['evil']}"))
        assert page.locator("#subscriber-name").inner_text() == XSS_NAME
        answers = page.locator("#attributes").inner_text()
        assert XSS_ATTRIBUTES["terrain"] in answers and '"><svg onload=alert(4)>' in answers
        assert "javascript:alert(5)" in page.locator("#timeline").inner_text()
        assert page.locator("#main img, #main script, #main svg, #main b").count() == 0
        console.accessible(script)  # the same page with the CSP bypassed: escaping alone holds
        page.goto(web.url("/admin/subscribers?q=mallory"))
        assert XSS_NAME in page.locator("#subscribers").inner_text()

        page.get_by_role("link", name="Suppressions and bounces").click()
        assert page.locator("#suppressed-total").inner_text() == "1"
        assert "runner0@example.com" in page.locator("#bounce-events", has_text="complaint").inner_text()
        assert "<script>alert(6)</script>" in page.locator("#main").inner_text()
        console.accessible(script)
        console.shoot("suppressions")
        for path in ("/admin/audit", "/admin/users", "/admin/account"):
            page.goto(web.url(path))
            console.accessible(script)
            console.shoot(path.rsplit("/", 1)[-1])
        page.get_by_role("button", name="Log out").click()
        page.get_by_text("You are logged out").wait_for()
        page.goto(web.url("/admin"))
        assert page.url == web.url("/admin/login")
        assert console.dialogs == [] and console.csp == []
    finally:
        console.close()
