"""What a marketer's cold trial found the words getting wrong, through the real doors: the
installed ``cadence`` command, the staff API over HTTP and the console in Chromium.

- An email that came due outside its send window is postponed by the worker to the next window:
  ``tick`` said "handed to the workers to send now" and ``campaigns status`` "0 waiting (next:
  none scheduled)". Now both say it is postponed and when it goes out, and so do ``campaigns
  list``, the staff API and the console.
- "Waiting" is people waiting for their next email everywhere; emails are "queued emails".
- Import: columns only kept are one line of information; the misnamed column is the warning.
- ``users add`` says when its link guesses the console's address; ``db upgrade`` says what it
  did; ``report`` of a misspelt name says "did you mean".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster import cadence_env, processes
from tests.support.console import session_client
from tests.support.web import WebServer
from tests.test_cli import Ran, cadence, one_error_line

CAMPAIGN = "lower-back-pain"
ENROLLED = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)  # Monday 10:30 in New York
LATE = datetime(2026, 12, 8, 18, 0, tzinfo=UTC)  # Tuesday 13:00 there: the 07:00-09:00 window is long gone
RUNNERS = "Email,First Name,Last Name,Time zone,Phone,Notes,Runs on\n" + "".join(
    f"r{i}@example.com,R{i},Lee,America/New_York,555-010{i},likes hills,trails\n" for i in range(4)
)


def env_of(web: WebServer) -> dict[str, str]:
    """The web server's database and clock for the command and a worker; the broker is the
    data folder's (the server's own memory:// reaches no worker)."""
    settings = {k: v for k, v in web.env.items() if k != "CADENCE_BROKER_URL"}
    return cadence_env(Path(web.env["CADENCE_DATA_DIR"]), **settings, COLUMNS="100")


def poll(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def flat(ran: Ran) -> str:
    return " ".join(ran.out.replace("│", " ").split())


@pytest.fixture(scope="module")
def postponed(web: WebServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The trial: four New York runners imported, enrolled, the clock past the window, a real
    worker, one `cadence tick`; yields the tick's output once the worker has postponed them."""
    env = env_of(web)
    tmp = tmp_path_factory.mktemp("postponed")
    (tmp / "runners.csv").write_text(RUNNERS)
    web.clock.set(ENROLLED)
    imported = cadence(env, "subscribers", "import", str(tmp / "runners.csv"))
    assert imported.status == 0, imported
    assert cadence(env, "campaigns", "enroll", CAMPAIGN, "--all").status == 0
    with processes(tmp / "logs") as procs:
        procs.worker(env, concurrency=1)
        web.clock.set(LATE)
        ticked = cadence(env, "tick")
        assert ticked.status == 0, ticked

        def worker_postponed() -> bool:
            document = json.loads(cadence(env, "campaigns", "status", CAMPAIGN, "--json").out)
            return bool(document["people"]["postponed"] == 4)

        try:
            poll("the worker postpones the four emails", worker_postponed)
        except AssertionError:
            raise AssertionError(procs.logs()) from None
        yield {"env": env, "tick": ticked, "import": imported}


def test_tick_says_the_emails_are_postponed_to_the_next_window_not_sent_now(postponed: dict[str, Any]) -> None:
    said = flat(postponed["tick"])
    assert "handed to the workers to send now" not in said, said
    assert "4 email(s) postponed to the next send window, next 2026-12-09 12:00 UTC" in said, said
    assert "4 email(s) came due since the last run." in said


def test_status_and_list_count_them_among_the_people_waiting_with_when(postponed: dict[str, Any]) -> None:
    env = postponed["env"]
    status = cadence(env, "campaigns", "status", CAMPAIGN)
    assert status.status == 0
    said = flat(status)
    assert (
        "4 waiting for their next email (next: Wed 9 Dec 12:00 UTC); "
        "4 emails postponed to the next send window, next Wed 9 Dec 12:00 UTC" in said
    ), said
    assert "none scheduled" not in said
    row = next(line for line in status.out.splitlines() if "1. why-it-hurts" in line)
    assert [cell.strip() for cell in row.split("│")[2:5]] == ["4", "0", "0"]  # waiting, due, queued
    assert max(len(line) for line in status.out.splitlines()) <= 100
    document = json.loads(cadence(env, "campaigns", "status", CAMPAIGN, "--json").out)
    assert document["people"]["postponed_until"] == "2026-12-09T12:00:00+00:00"
    assert document["steps"][0]["totals"]["queued"] == 0 and document["steps"][0]["totals"]["postponed"] == 4
    [listed] = json.loads(cadence(env, "campaigns", "list", "--json").out)
    assert (listed["waiting"], listed["queued"], listed["postponed"]) == (4, 0, 4)
    assert listed["next_send_at"] == "2026-12-09T12:00:00+00:00"
    # What `subscribers show` says of the same person: one truth.
    shown = flat(cadence(env, "subscribers", "show", "r0@example.com"))
    assert "2026-12-09 12:00 UTC" in shown


def test_the_staff_api_says_the_same(web: WebServer, postponed: dict[str, Any]) -> None:
    made = cadence(postponed["env"], "tokens", "add", "status-bot", "--scope", "read", "--json")
    token = json.loads(made.out)["token"]
    got = httpx.get(
        web.url(f"/api/admin/campaigns/{CAMPAIGN}"),
        headers={"Authorization": f"Bearer {token}", **web.from_ip()},
        timeout=20,
    )
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["waiting"], body["queued"], body["postponed"]) == (4, 0, 4)
    assert body["postponed_until"] == "2026-12-09T12:00:00+00:00"


def test_the_console_says_waiting_for_people_and_queued_for_emails(
    web: WebServer, postponed: dict[str, Any], browser: Any
) -> None:
    client = session_client(web, "words.viewer@clinic.example", "viewer")
    context = browser.new_context()
    context.add_cookies([{"name": n, "value": v, "url": web.base_url} for n, v in client.cookies.items()])
    try:
        page = context.new_page()
        page.goto(web.url("/admin/campaigns"))
        headers = page.locator("#drips thead th").all_inner_texts()
        assert "Waiting for their next email" in headers and "Queued emails" in headers
        assert "Waiting" not in headers
        row = page.locator(f"#campaign-{CAMPAIGN}")
        waiting = " ".join(row.locator("td.waiting").inner_text().split())
        assert waiting.startswith("4") and "next 2026-12-09 12:00 UTC" in waiting, waiting
        assert "4 emails postponed to the next send window, next Wed 9 Dec 12:00 UTC" in waiting
        assert row.locator("td.queued").inner_text().strip() == "0"
        page.goto(web.url(f"/admin/campaigns/{CAMPAIGN}"))
        people = " ".join(page.locator("#people").inner_text().split())
        assert "4 waiting for their next email (next: Wed 9 Dec 12:00 UTC)" in people, people
        assert "4 emails postponed to the next send window, next Wed 9 Dec 12:00 UTC" in people
        assert "Queued emails (in the workers' hands or ready for them now): 0" in people
        page.goto(web.url("/admin"))
        headers = page.locator("#campaigns thead th").all_inner_texts()
        cells = page.locator("#campaigns tbody tr", has_text=CAMPAIGN).locator("td").all_inner_texts()
        assert cells[headers.index("Queued emails")].strip() == "0", (headers, cells)
    finally:
        context.close()
        client.close()


def test_import_groups_the_columns_only_kept_and_warns_about_the_misnamed_one(postponed: dict[str, Any]) -> None:
    out = postponed["import"].out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert not any("stored, but" in line for line in lines), out
    kept = [line for line in lines if "stored as attributes that no segment reads" in line]
    assert kept == ["lower-back-pain: stored as attributes that no segment reads: last_name, phone, notes"], out
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings[0].startswith(
        "warning: column 'Runs on' (runs_on) is not read by any segment of lower-back-pain: did you mean 'terrain'?"
    ), out
    assert lines.index(kept[0]) > lines.index(warnings[-1])  # the information after every warning


@pytest.fixture
def fresh(tmp_path: Path) -> dict[str, str]:
    env = cadence_env(tmp_path / "data", COLUMNS="200")
    env.pop("CADENCE_BASE_URL", None)
    return env


def test_db_upgrade_says_it_created_the_database_then_that_it_is_up_to_date(fresh: dict[str, str]) -> None:
    created = cadence(fresh, "db", "upgrade")
    assert created.status == 0 and "Created the database at revision 0" in created.out, created
    assert "up to date" not in created.out
    again = cadence(fresh, "db", "upgrade")
    assert again.status == 0 and "Database is up to date at revision 0" in again.out, again


def test_users_add_says_when_the_link_assumes_the_default_address(fresh: dict[str, str]) -> None:
    assert cadence(fresh, "db", "upgrade").status == 0
    guessed = cadence(fresh, "users", "add", "ann@clinic.example")
    assert guessed.status == 0
    assert "http://127.0.0.1:8000/admin/setup/" in guessed.out
    note = " ".join(guessed.err.split())
    assert "assumes the console at the default address http://127.0.0.1:8000" in note, guessed
    assert "set CADENCE_BASE_URL" in note and "--base-url" in note
    given = cadence(fresh, "users", "add", "bob@clinic.example", "--base-url", "http://127.0.0.1:8765/", "--json")
    assert given.status == 0 and given.err == "", given
    assert json.loads(given.out)["setup_link"].startswith("http://127.0.0.1:8765/admin/setup/")
    told = cadence({**fresh, "CADENCE_BASE_URL": "http://localhost:9000"}, "users", "reset", "bob@clinic.example")
    assert told.status == 0 and "http://localhost:9000/admin/setup/" in told.out and told.err == "", told
    bad = cadence(fresh, "users", "add", "cy@clinic.example", "--base-url", "news.example.com")
    assert bad.status == 1 and "--base-url" in one_error_line(bad)
    listed = json.loads(cadence(fresh, "users", "list", "--json").out)
    assert "cy@clinic.example" not in {u["email"] for u in listed}  # nothing half-written


def test_report_of_a_misspelt_name_says_did_you_mean(postponed: dict[str, Any]) -> None:
    ran = cadence(postponed["env"], "report", "lower-back-pan")
    assert ran.status != 0
    line = one_error_line(ran)
    assert "did you mean 'lower-back-pain'?" in line, line
