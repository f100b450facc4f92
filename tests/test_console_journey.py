"""The staff console's whole newsletter journey (issue 14), every part real: ``cadence web`` on
PostgreSQL and Redis, a ``cadence worker`` and a ``cadence scheduler``, an aiosmtpd SMTP server
and headless Chromium.

An editor logs in, writes a newsletter for the readers training for a race (the drip's race
segments), watches the live count, sends a test (it arrives), schedules it; the worker sends it
to exactly those readers; the dashboard and the newsletter's campaign page show the numbers. A
viewer's schedule attempt is refused by the server; the editor's session, once logged out, is
refused too; axe-core finds nothing serious on the composer."""

from __future__ import annotations

import email
import email.policy
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from cadence.operations import newsletters
from tests.support.axe import axe_script
from tests.support.cluster import cadence_env, processes
from tests.support.composer import browser_login, compose, editor_client, readers
from tests.support.console import Console
from tests.support.services import postgres_database
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, csrf_token

pytestmark = pytest.mark.slow
NAME = "race-week-2026-12"
BODY = (
    "Race week is close. Three things keep your low back happy while you taper:\n\n"
    "- keep two short, easy runs;\n- sleep first, stretch second;\n"
    "- walk the first minutes of race morning.\n\n"
    "Questions? [Book a short call](https://precisionbodywork.example/book)."
)


def _wait_for(sink: SmtpSink, count: int, procs: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(sink.messages) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(sink.messages)} of {count} emails arrived\n{procs.logs()}")
        time.sleep(0.2)


def test_an_editor_composes_tests_and_schedules_and_a_worker_sends_it_to_race_trainees(
    tmp_path: Path, redis_url: str, browser: Any
) -> None:
    with (
        postgres_database() as database_url,
        SmtpSink() as sink,
        WebServer(
            tmp_path, sink, extra_env={"CADENCE_DATABASE_URL": database_url, "CADENCE_BROKER_URL": redis_url}
        ) as web,
        processes(tmp_path / "logs") as procs,
    ):
        readers(web.settings, web.clock.now(), racing=4, other=3, prefix="runner")
        env = cadence_env(tmp_path / "data", **web.env, CADENCE_TICK_SECONDS="0.2")
        procs.worker(env, concurrency=1)  # booting while the editor writes
        procs.scheduler(env)

        console = Console(browser, web)
        page = console.page
        try:
            browser_login(page, web, "rita.editor@clinic.example", "editor")
            page.get_by_role("link", name="Newsletters").click()
            page.get_by_role("link", name="Write a new newsletter").click()
            compose(
                page,
                name=NAME,
                subject="Race week without a sore back",
                preheader="Three small things for your taper",
                body=BODY,
            )
            page.get_by_label("Clinic news").check()
            race_segments = page.locator("input[name=segments][value$='+race']")
            for i in range(race_segments.count()):
                race_segments.nth(i).check()
            expect(page.locator("#count-total")).to_have_text("4")  # the live count
            expect(page.locator('[data-count-for="trail+race"]')).to_have_text("2")
            expect(page.locator('[data-count-for="everyday+race"]')).to_have_text("2")
            page.get_by_label("As soon as it is scheduled").check()
            expect(page.frame_locator('iframe[data-preview="phone"]').locator("body")).to_contain_text(
                "sleep first, stretch second"
            )
            console.accessible(axe_script())
            page.locator("#save").click()
            expect(page.locator("#done")).to_have_text(f"Saved {NAME}, version 1.")

            page.locator("#test_to").fill("team@clinic.example")
            page.locator("#send-test").click()
            expect(page.locator("#done")).to_contain_text("sent a test to 1 address(es)")
            test = email.message_from_bytes(sink.wait_for(1)[0].data, policy=email.policy.default)
            assert sink.messages[0].rcpt_tos == ("team@clinic.example",)
            assert test["Subject"] == "[TEST] Race week without a sore back"

            viewer = editor_client(web, "vince.viewer@clinic.example", "viewer")
            token = csrf_token(viewer.get(f"/admin/newsletters/{NAME}").text)
            refused = viewer.post(f"/admin/newsletters/{NAME}/schedule", data={"csrf_token": token})
            assert refused.status_code == 403 and "needs the editor role" in refused.text
            assert newsletters.status(web.settings, NAME)["state"] == "draft"

            page.locator("#schedule").click()
            expect(page.locator("#done")).to_contain_text(f"Newsletter {NAME} is scheduled for 4 reader(s)")
            expect(page.locator("#read-only")).to_contain_text("its text is locked")  # editor or not
            assert page.locator("#save, #schedule").count() == 0
            _wait_for(sink, 1 + 4, procs)
            sent_to = sorted(m.rcpt_tos[0] for m in sink.messages[1:])
            assert sent_to == [f"runner-race{i}@example.com" for i in range(4)]
            deadline = time.monotonic() + 30
            while newsletters.status(web.settings, NAME)["state"] != "sent" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert newsletters.status(web.settings, NAME)["sent"] == 4

            page.get_by_role("link", name="Dashboard").click()
            expect(page.locator("#sent-total")).to_have_text("4")
            page.get_by_role("link", name="Campaigns").click()
            expect(page.get_by_role("link", name=f"{NAME} in the composer")).to_be_visible()
            page.goto(web.url(f"/admin/campaigns/{NAME}"))
            results = page.locator("#results").inner_text()
            assert "trail+race" in results and "everyday+race" in results
            assert "4" in page.locator("#results tr.total").inner_text()

            # The session cookie, logged out, opens nothing: the server revoked it.
            cookies = {c["name"]: c["value"] for c in console.context.cookies()}
            stolen = httpx.Client(base_url=web.base_url, cookies=cookies, headers=web.from_ip())
            assert stolen.get(f"/admin/newsletters/{NAME}").status_code == 200
            page.get_by_role("button", name="Log out").click()
            page.get_by_text("You are logged out").wait_for()
            refused = stolen.get(f"/admin/newsletters/{NAME}")
            assert refused.headers.get("location") == f"/admin/login?next=/admin/newsletters/{NAME}"
            assert stolen.post(f"/admin/newsletters/{NAME}/schedule", data={"csrf_token": token}).status_code == 403
            assert console.dialogs == [] and console.csp == []
        finally:
            console.close()
