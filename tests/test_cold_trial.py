"""A marketer's first day tried cold from the README (the cold trial of December 2026), through
the doors they use: the installed ``cadence`` command as a subprocess and ``cadence web`` in
Chromium. Each test is one thing that was broken or confusing:

- a spreadsheet's rows of separators only (";;;;;;") were "rejected: email: empty";
- `campaigns validate`, `preview`, `enroll` and `newsletters status` with a misspelt name gave
  no "did you mean" (only `campaigns status` did);
- `subscribers show` did not say the person's time zone (the send window is read in it), and
  printed an empty table for someone in no campaign;
- there was no way to unsubscribe someone who asked on the phone (only suppress or erase);
- a console user added without --role (a viewer) could never be given another role;
- pausing a paused newsletter exited 1 ("is paused: it cannot be paused") where
  `campaigns pause` says "already paused" and exits 0;
- `cadence web --port 8765` without CADENCE_BASE_URL refused every console form as "Form
  expired" (the same-origin check compared with http://127.0.0.1:8000).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster import cadence_env
from tests.support.web import free_port
from tests.test_cli import CADENCE, START, cadence, one_error_line

NEWSLETTER = "clinic-news-2027-01"
# As a spreadsheet saves it: Excel's BOM, semicolons, odd header case, CRLF, a blank line, rows
# of separators and of spaces only (rows that once held data), a duplicate and a bad address.
CONTACTS = (
    "\ufeffE-MAIL;First NAME;time zone;Terrain\r\n"
    "ann@example.com;Ann;America/New_York;trails\r\n"
    "\r\n"
    "bob@example.com;Bob;;road\r\n"
    ";;;\r\n"
    "   ;  ; ;\r\n"
    "ann@example.com;Ann;America/New_York;trails\r\n"
    "carol@example;Carol;America/Denver;trails\r\n"
    ";;;\r\n"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("cold")
    (tmp / "clock").write_text(START)
    env = cadence_env(tmp / "data", CADENCE_CLOCK=f"file:{tmp / 'clock'}", COLUMNS="200")
    assert cadence(env, "db", "upgrade").status == 0
    (tmp / "contacts.csv").write_text(CONTACTS, encoding="utf-8", newline="")
    ran = cadence(env, "subscribers", "import", str(tmp / "contacts.csv"), "--skip-invalid", "--topic", "clinic-news")
    assert ran.status == 0, ran
    env["TRIAL_DIR"] = str(tmp)
    env["IMPORTED"] = ran.out
    return env


def test_rows_of_separators_or_spaces_are_blank_lines_not_errors(env: dict[str, str]) -> None:
    flat = " ".join(env["IMPORTED"].split())
    assert "2 created" in flat and "2 rejected" in flat, env["IMPORTED"]  # the duplicate and carol@example
    report = (Path(env["TRIAL_DIR"]) / "contacts.errors.csv").read_text(encoding="utf-8-sig")
    assert "empty" not in report and "line 7: email: ann@example.com already on line 2" in report, report
    assert "line 8: email: 'carol@example'" in report, report
    # All or nothing: the blank rows are no reason to refuse the file either.
    clean = Path(env["TRIAL_DIR"]) / "clean.csv"
    clean.write_text("email;first name\r\ndan@example.com;Dan\r\n;\r\n  ;  \r\n", encoding="utf-8")
    ran = cadence(env, "subscribers", "import", str(clean))
    assert ran.status == 0 and "1 created" in ran.out and "rejected" not in ran.out.replace("0 rejected", ""), ran


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["campaigns", "validate", "lower-back-pian"], "did you mean 'lower-back-pain'? (campaigns: lower-back-pain)"),
        (["campaigns", "preview", "lower-back-pian"], "did you mean 'lower-back-pain'?"),
        (["campaigns", "enroll", "lower-back-pian", "--all"], "did you mean 'lower-back-pain'?"),
        (["newsletters", "status", "clinic-news-2027-1"], f"did you mean '{NEWSLETTER}'? (newsletters: {NEWSLETTER})"),
        (["newsletters", "preview", "clinic-news"], f"(newsletters: {NEWSLETTER})"),
    ],
)
def test_a_misspelt_name_gets_did_you_mean_and_the_names(env: dict[str, str], args: list[str], hint: str) -> None:
    ran = cadence(env, *args)
    assert ran.status == 1 and hint in one_error_line(ran), ran


def test_show_says_the_time_zone_and_no_campaign_in_words(env: dict[str, str]) -> None:
    ann = cadence(env, "subscribers", "show", "ann@example.com")
    assert ann.status == 0 and "time zone: America/New_York" in ann.out, ann
    assert "Campaigns: none (`cadence campaigns enroll NAME --email ADDRESS`" in ann.out and "┏" not in ann.out
    bob = cadence(env, "subscribers", "show", "bob@example.com")
    assert "time zone: not known (the clinic's time zone is used)" in bob.out, bob
    assert cadence(env, "campaigns", "enroll", "lower-back-pain", "--email", "ann@example.com").status == 0
    enrolled = cadence(env, "subscribers", "show", "ann@example.com")
    assert "Campaigns: none" not in enrolled.out and "lower-back-pain" in enrolled.out, enrolled


def test_staff_unsubscribe_someone_who_asked_on_the_phone(env: dict[str, str]) -> None:
    assert cadence(env, "campaigns", "enroll", "lower-back-pain", "--email", "bob@example.com").status == 0
    before = json.loads(cadence(env, "newsletters", "audience", NEWSLETTER, "--json").out)["total"]
    ran = cadence(env, "subscribers", "unsubscribe", "bob@example.com", "--reason", "asked on the phone")
    assert ran.status == 0 and "unsubscribed bob@example.com" in ran.out, ran
    shown = json.loads(cadence(env, "subscribers", "show", "bob@example.com", "--json").out)
    assert shown["status"] == "unsubscribed"
    assert [e["state"] for e in shown["enrollments"]] == ["cancelled"]
    assert json.loads(cadence(env, "newsletters", "audience", NEWSLETTER, "--json").out)["total"] == before - 1
    audit = cadence(env, "audit", "--limit", "5")
    assert "subscriber.unsubscribe" in audit.out and "asked on the phone" in audit.out, audit
    again = cadence(env, "subscribers", "unsubscribe", "BOB@example.com")  # any case; nothing to do
    assert again.status == 0 and "nothing to do: they are unsubscribed" in again.out, again
    # Importing them again never subscribes them again.
    reimport = Path(env["TRIAL_DIR"]) / "bob.csv"
    reimport.write_text("email\nbob@example.com\n")
    assert cadence(env, "subscribers", "import", str(reimport)).status == 0
    assert json.loads(cadence(env, "subscribers", "show", "bob@example.com", "--json").out)["status"] == "unsubscribed"
    missing = cadence(env, "subscribers", "unsubscribe", "nobody@example.com")
    assert missing.status == 1 and "no subscriber 'nobody@example.com'" in one_error_line(missing)


def test_a_console_users_role_can_be_changed(env: dict[str, str]) -> None:
    assert cadence(env, "users", "add", "first@clinic.example").status == 0  # forgot --role: a viewer
    again = cadence(env, "users", "add", "first@clinic.example", "--role", "admin")
    assert again.status == 1 and "`cadence users role EMAIL ROLE` changes its role" in one_error_line(again)
    ran = cadence(env, "users", "role", "first@clinic.example", "admin")
    assert ran.status == 0 and "is now admin (was viewer)" in ran.out, ran
    listed = json.loads(cadence(env, "users", "list", "--json").out)
    assert [u["role"] for u in listed if u["email"] == "first@clinic.example"] == ["admin"]
    same = cadence(env, "users", "role", "first@clinic.example", "admin")
    assert same.status == 0 and "already admin" in same.out
    assert "staff.user_role" in cadence(env, "audit", "--limit", "3").out
    bad = cadence(env, "users", "role", "first@clinic.example", "boss")
    assert bad.status == 2 and "'boss' is not one of 'viewer', 'editor', 'admin'" in one_error_line(bad), bad
    unknown = cadence(env, "users", "role", "nobody@clinic.example", "editor")
    assert unknown.status == 1 and "no console user 'nobody@clinic.example'" in one_error_line(unknown)


def test_pausing_a_paused_newsletter_is_no_error(env: dict[str, str]) -> None:
    assert cadence(env, "newsletters", "schedule", NEWSLETTER, "--at", "2026-12-20 09:00 local").status == 0
    assert cadence(env, "newsletters", "pause", NEWSLETTER).status == 0
    again = cadence(env, "newsletters", "pause", NEWSLETTER)
    assert again.status == 0 and f"newsletter '{NEWSLETTER}' was already paused" in again.out, again
    assert cadence(env, "newsletters", "resume", NEWSLETTER).status == 0
    resumed = cadence(env, "newsletters", "resume", NEWSLETTER, "--json")
    assert resumed.status == 0 and json.loads(resumed.out)["changed"] is False, resumed
    assert "was not paused (it is scheduled)" in json.loads(resumed.out)["message"]
    assert cadence(env, "newsletters", "cancel", NEWSLETTER, "--yes").status == 0
    after_cancel = cadence(env, "newsletters", "resume", NEWSLETTER)  # a real refusal stays one
    assert after_cancel.status == 1 and "cannot be resumed" in one_error_line(after_cancel)


# ------------------------------------------------------------------ the console on another port


@pytest.fixture
def web_on_another_port(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`cadence web --port P` as the README starts it, without CADENCE_BASE_URL."""
    (tmp_path / "clock").write_text(START)
    env = cadence_env(tmp_path / "data", CADENCE_CLOCK=f"file:{tmp_path / 'clock'}", COLUMNS="200")
    assert cadence(env, "db", "upgrade").status == 0
    port = free_port()
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen([CADENCE, "web", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()
            time.sleep(0.1)
        yield base, env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    assert f"CADENCE_BASE_URL is not set: using {base}" in (tmp_path / "web.log").read_text()


def _choose_password(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(url)
    for field in page.query_selector_all("input[type=password]"):
        field.fill("correct horse battery staple 42")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def test_the_console_works_on_another_port_without_a_base_url(
    browser: Any, web_on_another_port: tuple[str, dict[str, str]]
) -> None:
    base, env = web_on_another_port
    # `cadence users add` (another process) still prints the default address: open it where it runs.
    link = json.loads(cadence(env, "users", "add", "me@clinic.example", "--role", "admin", "--json").out)
    setup = link["setup_link"].replace("http://127.0.0.1:8000", base)
    page = _choose_password(browser, setup)
    try:
        assert page.url.startswith(f"{base}/admin/login"), page.content()
        page.fill("input[name=email]", "me@clinic.example")
        page.fill("input[type=password]", "correct horse battery staple 42")
        page.click("button[type=submit]")
        page.wait_for_load_state()
        assert page.url == f"{base}/admin" and "Form expired" not in page.content()
        # A scheduled newsletter is in the newsletters table only: it was also a drip "running,
        # file missing" and "Campaign clinic-news-2027-01: its file is missing" under Needs attention.
        one = Path(env["CADENCE_DATA_DIR"]).parent / "one.csv"
        one.write_text("email,first name\nann@example.com,Ann\n")
        assert cadence(env, "subscribers", "import", str(one), "--topic", "clinic-news").status == 0
        assert cadence(env, "newsletters", "schedule", NEWSLETTER, "--at", "2026-12-20 09:00 local").status == 0
        for action in ("pause", "resume"):  # what mirrors its state into the drips' states
            assert cadence(env, "newsletters", action, NEWSLETTER).status == 0
        page.goto(f"{base}/admin")
        board = page.inner_text("body")
        assert "file is missing" not in board and "file missing" not in board, board
        assert NEWSLETTER not in page.inner_text("#campaigns") and NEWSLETTER in page.inner_text("#newsletters")
        # Pausing from the console says what happens in the console's words, not a command's.
        page.goto(f"{base}/admin/campaigns")
        page.click("#campaign-lower-back-pain button:has-text('Pause')")
        page.wait_for_load_state()
        shown = page.inner_text("body")
        assert "lower-back-pain is paused: no new emails within a second; everyone keeps their place" in shown
        assert "cadence campaigns" not in shown, shown
    finally:
        page.close()


def test_a_form_from_another_address_names_the_consoles_address(browser: Any, tmp_path: Path) -> None:
    """With CADENCE_BASE_URL on one port and the console opened on another, the refusal says
    which address to use instead of "Form expired"."""
    (tmp_path / "clock").write_text(START)
    port = free_port()
    env = cadence_env(
        tmp_path / "data", CADENCE_CLOCK=f"file:{tmp_path / 'clock'}", CADENCE_BASE_URL="http://127.0.0.1:8000"
    )
    assert cadence(env, "db", "upgrade").status == 0
    link = json.loads(cadence(env, "users", "add", "me@clinic.example", "--role", "admin", "--json").out)
    proc = subprocess.Popen(
        [CADENCE, "web", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        page = _choose_password(browser, link["setup_link"].replace("http://127.0.0.1:8000", base))
        try:
            text = page.inner_text("main") if page.query_selector("main") else page.inner_text("body")
            assert "Wrong address" in text and "http://127.0.0.1:8000/admin" in text, text
            assert "set CADENCE_BASE_URL to the address you use" in text
        finally:
            page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_export_to_a_missing_folder_names_the_folder(env: dict[str, str]) -> None:
    """It named the hidden temporary file (/nowhere/.x.csv.qko0mu2n) instead."""
    missing = Path(env["TRIAL_DIR"]) / "nowhere"
    ran = cadence(env, "subscribers", "export", "--out", str(missing / "x.csv"))
    assert ran.status == 1 and f"--out: no folder '{missing}' to write 'x.csv' in" in one_error_line(ran), ran
    assert not missing.exists()


def test_a_list_of_archived_campaigns_does_not_say_there_are_no_files(tmp_path: Path) -> None:
    (tmp_path / "clock").write_text(START)
    env = cadence_env(tmp_path / "data", CADENCE_CLOCK=f"file:{tmp_path / 'clock'}", COLUMNS="200")
    assert cadence(env, "db", "upgrade").status == 0
    assert cadence(env, "campaigns", "cancel", "lower-back-pain", "--yes").status == 0
    assert cadence(env, "campaigns", "archive", "lower-back-pain").status == 0
    listed = cadence(env, "campaigns", "list")
    assert listed.status == 0 and "Every campaign is archived (1): `cadence campaigns list --all`" in listed.out
    assert "No campaign files" not in listed.out, listed
    assert "lower-back-pain" in cadence(env, "campaigns", "list", "--all").out
    (tmp_path / "empty").mkdir()
    empty = cadence({**env, "CADENCE_CAMPAIGNS_DIR": str(tmp_path / "empty")}, "campaigns", "list")
    assert f"No campaign files in {tmp_path / 'empty'}" in " ".join(empty.out.split()), empty


def test_the_help_says_where_the_staff_console_is(env: dict[str, str]) -> None:
    ran = cadence(env, "web", "--help")
    flat = " ".join(ran.out.replace("│", " ").split())
    assert ran.status == 0 and "Serve the staff console (/admin; `cadence users add` makes its first account)" in flat
    users = cadence(env, "users", "--help")
    assert "role" in users.out and "Change what someone may do" in " ".join(users.out.replace("│", " ").split())


def test_unsubscribe_someone_from_their_console_profile(
    browser: Any, web_on_another_port: tuple[str, dict[str, str]]
) -> None:
    base, env = web_on_another_port
    people = Path(env["CADENCE_DATA_DIR"]).parent / "people.csv"
    people.write_text("email,first name\nann@example.com,Ann\n")
    assert cadence(env, "subscribers", "import", str(people), "--topic", "clinic-news").status == 0
    assert cadence(env, "campaigns", "enroll", "lower-back-pain", "--all").status == 0
    link = json.loads(cadence(env, "users", "add", "ed@clinic.example", "--role", "editor", "--json").out)
    page = _choose_password(browser, link["setup_link"].replace("http://127.0.0.1:8000", base))
    try:
        page.fill("input[name=email]", "ed@clinic.example")
        page.fill("input[type=password]", "correct horse battery staple 42")
        page.click("button[type=submit]")
        page.wait_for_load_state()
        page.goto(f"{base}/admin/subscribers?q=ann")
        page.click("text=ann@example.com")
        page.wait_for_load_state()
        page.fill("#unsubscribe-reason", "asked at the desk")
        page.click("button:has-text('Unsubscribe')")
        page.wait_for_load_state()
        assert "Unsubscribed: their campaigns ended" in page.inner_text("#done")
        assert page.inner_text("#subscriber-status") == "unsubscribed"
        assert page.locator("#unsubscribe-reason").count() == 0  # nothing left to unsubscribe
    finally:
        page.close()
    shown = json.loads(cadence(env, "subscribers", "show", "ann@example.com", "--json").out)
    assert shown["status"] == "unsubscribed" and [e["state"] for e in shown["enrollments"]] == ["cancelled"]
    audit = cadence(env, "audit", "--target", "ann@example.com").out
    assert "user:ed@clinic.example" in audit and "subscriber.unsubscribe" in audit and "asked at the desk" in audit
