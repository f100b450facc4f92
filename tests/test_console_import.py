"""The console's Import page (issue 14) against the real ``cadence web``, a real Celery worker on
Redis and headless Chromium: an editor uploads a file with good and bad rows, watches the job
reach "done", downloads the error report (spreadsheet-safe) and finds the counts; a viewer sees
no form and a viewer's POST is refused by the server; XSS payloads from a CSV stay text; files
that are no subscriber CSV are refused naming the line and column; axe-core finds no serious
problem. With the single-machine broker, ``cadence web`` alone runs the import (no worker)."""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cadence.config import Settings
from cadence.db.models import AuditEntry, Subscriber, SubscriberTag, SubscriberTopic
from cadence.db.session import transaction
from tests.support.axe import axe_script
from tests.support.cluster import processes
from tests.support.console import PASSWORD, Console, new_user, session_client, set_password
from tests.support.smtpd import SmtpSink
from tests.support.web import START, WebServer, csrf_token

XSS_NAME = '<img src=x onerror="alert(1)">Eve'
XSS_TERRAIN = "<script>alert(2)</script>"
XSS_FILE = "<img src=x onerror=alert(7)>list.csv"  # the name the browser sends: shown, never run
XSS_ADDRESS = "<script>alert(8)</script>"
GOOD_ROWS = 2000


def people_csv(good: int = GOOD_ROWS) -> bytes:
    """`good` valid rows, then bad ones (an invalid address, a bad time zone, a formula in a bad
    row's name) and a row whose name and answer are XSS payloads; `;`-delimited with an
    ``Email Address`` header and a BOM, as Excel in Europe writes it."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(["Email Address", "First Name", "Time zone", "terrain"])
    for n in range(good):
        writer.writerow([f"runner{n}@example.com", f"Runner{n}", "America/New_York", "trails" if n % 2 else "road"])
    writer.writerow(["not-an-address", "Bad", "UTC", "road"])
    writer.writerow(["tz@example.com", '=HYPERLINK("http://evil.example")', "Mars/Olympus", "road"])
    writer.writerow(["eve@example.com", XSS_NAME, "UTC", XSS_TERRAIN])
    writer.writerow([XSS_ADDRESS, XSS_NAME, "UTC", "road"])
    return b"\xef\xbb\xbf" + out.getvalue().encode()


@pytest.fixture(scope="module")
def worker_web(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[WebServer]:
    """``cadence web`` with Redis as the broker (imports go to a worker) and a real
    ``cadence worker`` beside it, sharing the data dir (where the uploads are)."""
    tmp = tmp_path_factory.mktemp("import-web")
    with (
        SmtpSink() as sink,
        WebServer(tmp, sink, extra_env={"CADENCE_BROKER_URL": redis_url, "CADENCE_IMPORT_MAX_MB": "2"}) as web,
        processes(tmp / "logs") as procs,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CADENCE_")} | web.env
        procs.worker(env, concurrency=1)
        yield web


def log_in_browser(console: Console, web: WebServer, email: str, role: str) -> None:
    with httpx.Client(base_url=web.base_url, headers=web.from_ip()) as client:
        set_password(client, new_user(web, email, role))
    page = console.page
    page.goto(web.url("/admin/login"))
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def test_an_editor_imports_good_and_bad_rows_through_a_real_worker_and_gets_the_error_report(
    worker_web: WebServer, browser: Any, tmp_path: Path
) -> None:
    web = worker_web
    script = axe_script()
    upload = tmp_path / XSS_FILE
    upload.write_bytes(people_csv())
    console = Console(browser, web)
    page = console.page
    try:
        log_in_browser(console, web, "ed.editor@clinic.example", "editor")
        page.get_by_role("link", name="Import").click()
        page.get_by_role("heading", name="Upload a CSV file").wait_for()
        console.accessible(script)
        console.shoot("imports")
        page.get_by_label("CSV file", exact=True).set_input_files(str(upload))
        page.get_by_label("Load the valid rows, report the bad ones").check()
        page.get_by_label("Tags to add to everyone in the file").fill("Spring Expo")
        page.get_by_role("button", name="Upload and check").click()
        page.get_by_role("heading", name=f"Import of {XSS_FILE}").wait_for()
        # The check: nothing imported yet, the rows counted, the bad ones flagged, one click to go on.
        assert page.locator("#job-state").inner_text() == "pending"
        assert (
            f"The file has {GOOD_ROWS + 4:,} rows; 3 of them have problems" in page.locator("#check-rows").inner_text()
        )
        console.accessible(script)
        page.get_by_role("button", name=f"Import {GOOD_ROWS + 4:,} rows").click()
        # console-import.js polls progress.json and reloads once the worker is done.
        page.locator("#job-state", has_text="done").wait_for(timeout=90_000)
        assert page.locator("#rows-read").inner_text() == f"{GOOD_ROWS + 4:,}"
        assert page.locator("#loaded").inner_text() == f"{GOOD_ROWS + 1:,}"  # Eve too: her row is valid
        assert page.locator("#rejected").inner_text() == "3"
        problems = page.locator("#problems").inner_text()
        assert f"line {GOOD_ROWS + 2}: email" in problems and f"line {GOOD_ROWS + 3}: timezone" in problems
        assert f"line {GOOD_ROWS + 5}: email" in problems
        assert page.locator("#main img, #main script, #main svg").count() == 0
        console.accessible(script)
        console.shoot("import-job")

        with page.expect_download() as download:
            page.get_by_role("link", name="Download the error report (CSV)").click()
        report = Path(download.value.path()).read_bytes()
        assert report.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(report.decode("utf-8-sig")), delimiter=";"))
        assert rows[0] == ["Email Address", "First Name", "Time zone", "terrain", "error"]
        assert [r[0] for r in rows[1:]] == ["not-an-address", "tz@example.com", XSS_ADDRESS]
        assert rows[2][1] == '\'=HYPERLINK("http://evil.example")'  # inert in a spreadsheet
        assert f"line {GOOD_ROWS + 3}" in rows[2][4] and "timezone" in rows[2][4]

        # The XSS payloads from the file stay text on the job, list and subscriber pages.
        with transaction(web.settings.database_url) as session:
            eve = session.scalar(select(Subscriber).where(Subscriber.email_key == "eve@example.com"))
            assert eve is not None and eve.first_name == XSS_NAME
            tagged = session.scalars(select(SubscriberTag.tag).where(SubscriberTag.subscriber_id == eve.id)).all()
            assert tagged == ["spring-expo"]
            assert session.query(Subscriber).count() == GOOD_ROWS + 1
            audit = session.scalars(select(AuditEntry).where(AuditEntry.action.like("subscribers.import%"))).all()
        actions = {(a.actor, a.action) for a in audit}
        assert {
            ("user:ed.editor@clinic.example", "subscribers.import.queued"),
            ("user:ed.editor@clinic.example", "subscribers.import"),
            ("user:ed.editor@clinic.example", "subscribers.import.report"),
        } <= actions
        page.goto(web.url(f"/admin/subscribers/{eve.id}"))
        assert page.locator("#subscriber-name").inner_text() == XSS_NAME
        assert XSS_TERRAIN in page.locator("#attributes").inner_text()
        page.goto(web.url("/admin/imports"))
        assert "done" in page.locator("#imports").inner_text() and XSS_FILE in page.locator("#imports").inner_text()
        assert page.locator("#main img, #main script, #main svg").count() == 0
        assert console.dialogs == [] and console.csp == []
        log = (Path(web.tmp) / "logs" / "worker.log").read_text()
        assert "cadence.import_job" in log  # the worker ran it, not the web process
    finally:
        console.close()


def test_all_or_nothing_with_bad_rows_imports_nothing_and_says_which_lines(worker_web: WebServer) -> None:
    editor = session_client(worker_web, "ana.editor@clinic.example", "editor")
    token = csrf_token(editor.get("/admin/imports").text)
    body = people_csv(good=50).replace(b"runner", b"whole")
    sent = editor.post(
        "/admin/imports", data={"csrf_token": token, "mode": "all"}, files={"file": ("whole.csv", body, "text/csv")}
    )
    assert sent.status_code == 303, sent.text
    assert "With “all or nothing”, these rows stop the whole import" in editor.get(sent.headers["location"]).text
    job = wait_for_job(editor, confirm(editor, sent))
    assert job["state"] == "rejected" and job["loaded"] == "0" and job["rejected"] == "3"
    page = editor.get(sent.headers["location"]).text
    assert "Nothing was imported" in page and "line 52: email" in page
    with transaction(worker_web.settings.database_url) as session:
        assert session.query(Subscriber).filter(Subscriber.email_key.like("whole%")).count() == 0


def confirm(client: httpx.Client, uploaded: httpx.Response) -> str:
    """Press the check page's "Import" button (a plain form) for the upload that answered
    `uploaded`; the job page's path."""
    assert uploaded.status_code == 303, uploaded.text
    path = uploaded.headers["location"]
    check = client.get(path)
    assert "Check before importing" in check.text and client.get(f"{path}/progress.json").json()["state"] == "pending"
    started = client.post(f"{path}/start", data={"csrf_token": csrf_token(check.text)})
    assert (started.status_code, started.headers["location"]) == (303, path), started.text
    return path


def wait_for_job(client: httpx.Client, path: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"{path}/progress.json").json()
        if job["finished"]:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_a_viewer_sees_no_upload_form_and_the_server_refuses_a_viewers_upload(worker_web: WebServer) -> None:
    viewer = session_client(worker_web, "vic.viewer@clinic.example", "viewer")
    page = viewer.get("/admin/imports")
    assert page.status_code == 200 and "Past imports" in page.text and 'type="file"' not in page.text
    token = csrf_token(page.text)  # the logout form's: the viewer's own session token
    refused = viewer.post(
        "/admin/imports",
        data={"csrf_token": token, "mode": "valid"},
        files={"file": ("x.csv", b"email\nv@example.com\n")},
    )
    assert refused.status_code == 403 and "needs the editor role" in refused.text
    assert [p.name for p in worker_web.settings.imports_dir.glob("upload-*")] == []
    assert worker_web.subscriber("v@example.com") is None


@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        ("logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "not a CSV file"),
        ("utf16.csv", "email,name\r\na@example.com,A\r\n".encode("utf-16"), "line 1: the file is UTF-16"),
        ("names.csv", b"name,city\nAnn,Richmond\n", "line 1: the header must have an &#39;email&#39; column"),
        ("latin1.csv", b"Email,First name\n" + bytes([0xE9]) + b"x@example.com,Ren\n", "line 1, column"),
    ],
)
def test_a_file_that_is_no_subscriber_csv_is_refused_naming_the_line(
    worker_web: WebServer, name: str, body: bytes, says: str
) -> None:
    editor = session_client(worker_web, f"e-{name}@clinic.example", "editor")
    token = csrf_token(editor.get("/admin/imports").text)
    answer = editor.post("/admin/imports", data={"csrf_token": token, "mode": "all"}, files={"file": (name, body)})
    if name == "latin1.csv":  # the header is fine: the job reports the bad byte by line and column
        assert answer.status_code == 303
        job = wait_for_job(editor, confirm(editor, answer))
        assert job["state"] == "rejected"
        shown = editor.get(answer.headers["location"]).text
        assert re.search(r"line 2: [^<]*byte 0xE9 at column 1 is not UTF-8", shown), shown
        return
    assert answer.status_code == 400, answer.text
    assert says in answer.text, answer.text
    assert list(worker_web.settings.imports_dir.glob("upload-*")) == []


def test_uploads_over_the_limit_and_topics_without_consent_are_refused(worker_web: WebServer) -> None:
    editor = session_client(worker_web, "lim.editor@clinic.example", "editor")
    token = csrf_token(editor.get("/admin/imports").text)
    big = b"email\n" + b"x@example.com\n" * 200_000  # 2.8 MB over the test's 2 MB limit
    answer = editor.post("/admin/imports", data={"csrf_token": token}, files={"file": ("big.csv", big)})
    assert answer.status_code == 413 and "at most 2 MB" in answer.text
    topic = next(iter(worker_web_topics(worker_web)))
    answer = editor.post(
        "/admin/imports",
        data={"csrf_token": token, "mode": "valid", "topic": topic},
        files={"file": ("t.csv", b"email\nt@example.com\n")},
    )
    assert answer.status_code == 400 and "Consent: confirm that everyone in the file agreed" in answer.text
    answer = editor.post(
        "/admin/imports",
        data={"csrf_token": token, "mode": "valid", "topic": topic, "consent": "yes"},
        files={"file": ("t.csv", b"email\nt@example.com\n")},
    )
    assert wait_for_job(editor, confirm(editor, answer))["state"] == "done"
    with transaction(worker_web.settings.database_url) as session:
        joined = session.scalars(
            select(SubscriberTopic.topic).join(Subscriber).where(Subscriber.email_key == "t@example.com")
        )
        assert list(joined) == [topic]
    assert list(worker_web.settings.imports_dir.glob("upload-*")) == []


def worker_web_topics(web: WebServer) -> list[str]:
    from cadence.files.forms import load_sender

    return list(load_sender(web.settings.sender_file).topics)


def test_with_the_single_machine_broker_cadence_web_alone_runs_the_import(tmp_path: Path) -> None:
    with SmtpSink() as sink, WebServer(tmp_path, sink, extra_env={"CADENCE_BROKER_URL": "filesystem://"}) as web:
        editor = session_client(web, "solo.editor@clinic.example", "editor")
        token = csrf_token(editor.get("/admin/imports").text)
        answer = editor.post(
            "/admin/imports",
            data={"csrf_token": token, "mode": "valid"},
            files={"file": ("solo.csv", people_csv(good=300))},
        )
        job = wait_for_job(editor, confirm(editor, answer))
        assert (job["state"], job["loaded"], job["rejected"]) == ("done", "301", "3")
        assert re.search(r"Imported: 301 new", editor.get(answer.headers["location"]).text)


def running_job(web: WebServer, file_name: str, content: str, *, runner: str) -> int:
    """A job "running" for `runner` since now, its upload `content` in place, as a runner that
    is about to die leaves it (the heartbeat is written by the runner only)."""
    from cadence.db import import_jobs as sql

    with transaction(web.settings.database_url) as session:
        job_id = sql.insert_job(
            session,
            mode="valid",
            file_name=file_name,
            size_bytes=len(content.encode()),
            topics=[],
            tags=[],
            actor="user:check.editor@clinic.example",
            now=web.clock.now(),
        )
        assert sql.claim_job(session, job_id, runner=runner, now=web.clock.now(), stale_before=web.clock.now())
    web.settings.imports_dir.mkdir(parents=True, exist_ok=True)
    (web.settings.imports_dir / f"{job_id}.csv").write_text(content)
    return job_id


def queued(settings: Settings, upload: Path, file_name: str, *, now: datetime) -> int:
    """operations.import_jobs.queue_import for `upload` as Ann (load the valid rows, no topics
    or tags): the pending job's id, checked and waiting for its confirmation."""
    from cadence.operations import import_jobs

    with transaction(settings.database_url) as session:
        return import_jobs.queue_import(
            session,
            upload=upload,
            imports_dir=settings.imports_dir,
            file_name=file_name,
            mode="valid",
            topics=[],
            known_topics={},
            tags="",
            consent=False,
            actor="user:ann@clinic.example",
            now=now,
            campaigns_dir=settings.campaigns_dir,
            templates_dir=settings.templates_dir,
        )


def test_a_job_runs_once_even_when_its_task_is_delivered_twice(database_url: str, tmp_path: Path) -> None:
    """operations.import_jobs on SQLite and PostgreSQL: the second delivery of the task finds the
    job taken and does nothing; a job whose runner went silent longer than the lease is taken
    over (a worker killed mid-import); the upload is gone once the job ends."""
    from datetime import timedelta

    from cadence.clock import FileClock
    from cadence.config import load_settings
    from cadence.db.import_jobs import ImportJob
    from cadence.db.migrate import upgrade
    from cadence.operations import import_jobs

    clock = FileClock(tmp_path / "clock")
    clock.set(START)
    settings = load_settings(
        {
            "CADENCE_DATA_DIR": str(tmp_path / "data"),
            "CADENCE_DATABASE_URL": database_url,
            "CADENCE_SECRET_KEY": "k" * 40,
        }
    )
    upgrade(settings.database_url)
    upload = tmp_path / "upload.part"
    upload.write_bytes(people_csv(good=40))
    job_id = queued(settings, upload, "C:\\Users\\ann\\clinic.csv", now=clock.now())
    assert not upload.exists() and import_jobs.job_file(settings.imports_dir, job_id).exists()
    assert import_jobs.run_import_job(settings, clock, job_id, runner="early") == ""  # not confirmed yet
    with transaction(settings.database_url) as session:
        assert import_jobs.confirm_import(session, job_id, actor="user:ann@clinic.example", now=clock.now())
    assert import_jobs.run_import_job(settings, clock, job_id, runner="first") == "done"
    assert import_jobs.run_import_job(settings, clock, job_id, runner="second") == ""
    assert not import_jobs.job_file(settings.imports_dir, job_id).exists()
    with transaction(settings.database_url) as session:
        job = session.get(ImportJob, job_id)
        assert job is not None
        assert (job.file_name, job.runner, job.created, job.rejected) == ("clinic.csv", "first", 41, 3)
        # A runner that stopped mid-import: silent for longer than the lease, the job is free again.
        job.state, job.heartbeat_at = "running", clock.now()
    import_jobs.job_file(settings.imports_dir, job_id).write_bytes(people_csv(good=40))
    assert import_jobs.run_import_job(settings, clock, job_id, runner="third") == ""  # still fresh
    clock.advance(timedelta(seconds=settings.lease_seconds + 1))
    assert import_jobs.run_import_job(settings, clock, job_id, runner="third") == "done"
    with transaction(settings.database_url) as session:
        job = session.get(ImportJob, job_id)
        assert job is not None and (job.runner, job.created, job.unchanged) == ("third", 0, 41)


def test_without_javascript_a_running_job_page_reloads_itself(worker_web: WebServer, browser: Any) -> None:
    """A job no worker has taken yet (a row queued here, no task sent): its page carries the
    static script for browsers with JavaScript and a <noscript> refresh for the others; a
    Chromium with JavaScript off does reload it by itself, and sees what it waits for."""
    from cadence.db.import_jobs import insert_job

    client = session_client(worker_web, "nojs.viewer@clinic.example", "viewer")
    with transaction(worker_web.settings.database_url) as session:
        job_id = insert_job(
            session,
            mode="valid",
            file_name="waiting.csv",
            size_bytes=10,
            topics=[],
            tags=[],
            actor="user:x@clinic.example",
            now=worker_web.clock.now(),
        )
    html = client.get(f"/admin/imports/{job_id}").text
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in html
    assert '<script src="/static/console-import.js" defer></script>' in html
    context = browser.new_context(java_script_enabled=False)
    try:
        context.add_cookies(
            [{"name": name, "value": value, "url": worker_web.base_url} for name, value in client.cookies.items()]
        )
        page = context.new_page()
        page.goto(worker_web.url(f"/admin/imports/{job_id}"))
        assert page.locator("#job-state").inner_text() == "queued"
        assert "start cadence worker" in page.locator("#queued-hint").inner_text()
        with page.expect_navigation(timeout=15_000):  # the refresh, with no script running
            pass
    finally:
        context.close()


def test_a_job_whose_worker_died_shows_interrupted_and_a_worker_runs_it_again(worker_web: WebServer) -> None:
    """With Redis and a worker: a job "running" on a worker that was killed (its heartbeat older
    than CADENCE_LEASE_SECONDS) shows "interrupted" naming that worker; the button queues the task
    again and the real worker re-claims it (db.import_jobs.claim_job's stale rule)."""
    from datetime import timedelta

    web = worker_web
    editor = session_client(web, "stale.editor@clinic.example", "editor")
    job_id = running_job(web, "killed.csv", "email\nkilled.worker@example.com\n", runner="worker gone@host")
    path = f"/admin/imports/{job_id}"
    assert editor.get(f"{path}/progress.json").json()["state"] == "running"
    web.clock.advance(timedelta(seconds=web.settings.lease_seconds + 1))
    page = editor.get(path).text
    assert "interrupted" in editor.get(f"{path}/progress.json").json()["state"]
    assert "its worker (worker gone@host)" in page and "Run the import again" in page
    assert editor.post(f"{path}/resume", data={"csrf_token": csrf_token(page)}).status_code == 303
    job = wait_for_job(editor, path)
    assert (job["state"], job["created"]) == ("done", "1")
    assert web.subscriber("killed.worker@example.com") is not None
