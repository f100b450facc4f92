"""The console import tells the marketer what ``cadence subscribers import`` tells them, before
anything is imported: upload → check (rows, how each column is stored, the CLI's warnings) →
import or cancel, in a browser with JavaScript off; the job page and its progress.json keep the
whole file's findings after. A job whose runner died shows "interrupted" and runs again from
its page; error reports and unconfirmed uploads are deleted after their time, on the business
clock. ``cadence web`` alone runs the imports here (the memory:// broker: embedded mode)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cadence.clock import FileClock
from cadence.config import Settings, load_settings
from cadence.db import import_jobs as sql
from cadence.db.migrate import upgrade
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from tests.support.cluster import cadence_env
from tests.support.console import session_client
from tests.support.web import WebServer, csrf_token
from tests.test_cli import CADENCE
from tests.test_console_import import confirm, queued, running_job, wait_for_job

# "Runs on" is what a trail-running club's export calls it; the segments read `terrain`, and
# "trail" is not the "trails" their rule wants: everyone would land in the fallback segment.
RUNNERS = (
    "Email Address,First Name,Runs on,Training for race,Race month,Shoe size\n"
    "ann@runners.example,Ann,trails,yes,april,38\n"
    "bob@runners.example,Bob,road,no,,44\n"
    "cat@runners.example,Cat,trails,yes,may,40\n"
)


@pytest.fixture(scope="module")
def editor(web: WebServer) -> Iterator[httpx.Client]:
    client = session_client(web, "check.editor@clinic.example", "editor")
    yield client
    client.close()


def no_js_page(browser: Any, web: WebServer, client: httpx.Client) -> Any:
    context = browser.new_context(java_script_enabled=False)
    context.add_cookies([{"name": n, "value": v, "url": web.base_url} for n, v in client.cookies.items()])
    return context


def cli_sentences(tmp_path: Path, csv_file: Path) -> list[str]:
    """What ``cadence subscribers import`` prints about the columns (its own database)."""
    env = cadence_env(tmp_path / "cli-data", COLUMNS="400")
    upgrade(load_settings(env).database_url)
    ran = subprocess.run([CADENCE, "subscribers", "import", str(csv_file)], env=env, capture_output=True, text=True)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    return [line.removeprefix("warning: ") for line in ran.stdout.splitlines()[2:]]


def test_the_check_shows_the_clis_warnings_before_importing_and_the_job_keeps_them(
    web: WebServer, editor: httpx.Client, browser: Any, tmp_path: Path
) -> None:
    csv_file = tmp_path / "club export.csv"
    csv_file.write_text(RUNNERS)
    said = cli_sentences(tmp_path, csv_file)
    # "Runs on" holds "trails": the misnamed terrain column, a warning before anything else;
    # "Shoe size" is only kept, on one line of information after the warnings.
    assert said[0].startswith("column 'Runs on' (runs_on) is not read by any segment of lower-back-pain: did you mean")
    assert "lower-back-pain: stored as attributes that no segment reads: shoe_size" in said
    assert any(s.startswith("no column gives 'terrain': new subscribers from this file land in") for s in said)

    context = no_js_page(browser, web, editor)
    try:
        page = context.new_page()
        page.goto(web.url("/admin/imports"))
        page.get_by_label("CSV file", exact=True).set_input_files(str(csv_file))
        page.get_by_role("button", name="Upload and check").click()
        page.get_by_role("heading", name="Check before importing").wait_for()
        assert page.locator("#job-state").inner_text() == "pending"
        assert "The file has 3 rows. Nothing has been imported yet." in page.locator("#check-rows").inner_text()
        columns = page.locator("#columns tbody").inner_text()
        assert "Runs on\truns_on" in columns and "Email Address\temail" in columns
        shown = [t.removeprefix("Warning: ") for t in page.locator("#findings li").all_inner_texts()]
        assert shown == said  # the same sentences, from the same function
        assert web.subscriber("ann@runners.example") is None  # nothing imported before the click
        job_path = page.url.removeprefix(web.base_url)

        page.get_by_role("button", name="Import 3 rows").click()
        page.locator("#job-state", has_text="done").wait_for(timeout=60_000)  # <noscript> refreshes
        assert "From the whole file, as imported." in page.locator("#main").inner_text()
        shown = [t.removeprefix("Warning: ") for t in page.locator("#findings li").all_inner_texts()]
        assert shown == said
    finally:
        context.close()
    assert web.subscriber("ann@runners.example") is not None
    progress = editor.get(f"{job_path}/progress.json").json()
    assert progress["state"] == "done" and progress["findings"]["stage"] == "import"
    assert [m["text"] for m in progress["findings"]["messages"]] == said
    assert progress["findings"]["warnings"][0] == said[0]


def upload(client: httpx.Client, name: str, body: bytes) -> httpx.Response:
    token = csrf_token(client.get("/admin/imports").text)
    return client.post(
        "/admin/imports", data={"csrf_token": token, "mode": "valid"}, files={"file": (name, body, "text/csv")}
    )


def test_cancel_after_the_check_deletes_the_upload_and_imports_nothing(web: WebServer, editor: httpx.Client) -> None:
    answer = upload(editor, "cancel.csv", b"email,terrain\ncancel.me@example.com,trails\n")
    path = answer.headers["location"]
    job_id = int(path.rsplit("/", 1)[1])
    assert (web.settings.imports_dir / f"{job_id}.csv").exists()
    check = editor.get(path).text
    cancelled = editor.post(f"{path}/cancel", data={"csrf_token": csrf_token(check)})
    assert cancelled.status_code == 303
    assert editor.get(f"{path}/progress.json").json()["state"] == "cancelled"
    assert "Not imported: cancelled by user:check.editor@clinic.example" in editor.get(path).text
    assert not (web.settings.imports_dir / f"{job_id}.csv").exists()
    # The import button of the old page does nothing now.
    assert editor.post(f"{path}/start", data={"csrf_token": csrf_token(check)}).status_code == 303
    assert editor.get(f"{path}/progress.json").json()["state"] == "cancelled"
    assert web.subscriber("cancel.me@example.com") is None


def test_bad_uploads_empty_header_only_and_only_unknown_columns(web: WebServer, editor: httpx.Client) -> None:
    empty = upload(editor, "empty.csv", b"")
    assert empty.status_code == 400 and "The file: the file is empty" in empty.text

    no_email = upload(editor, "names.csv", b"Name,Runs on\nAnn,trails\n")
    assert no_email.status_code == 400 and "line 1: the header must have an &#39;email&#39; column" in no_email.text

    header_only = upload(editor, "header.csv", b"Email,Runs on\n")
    path = header_only.headers["location"]
    page = editor.get(path).text
    assert "The file has a header but no rows: there is nothing to import." in page
    assert "Import 0 rows" not in page and "Cancel and delete the upload" in page
    forced = editor.post(f"{path}/start", data={"csrf_token": csrf_token(page)})  # no button, but a POST anyway
    assert forced.status_code == 303 and editor.get(f"{path}/progress.json").json()["state"] == "pending"

    unknown = upload(editor, "unknown.csv", b"Email,Shoe size,Favourite colour\nu@example.com,41,green\n")
    path = unknown.headers["location"]
    findings = editor.get(f"{path}/progress.json").json()["findings"]
    assert findings["stage"] == "check" and findings["rows"] == 1
    # Columns only kept: one line of information, not a warning each.
    assert not any("shoe_size" in w or "favourite_colour" in w for w in findings["warnings"])
    infos = [m["text"] for m in findings["messages"] if m["level"] == "info"]
    assert "lower-back-pain: stored as attributes that no segment reads: shoe_size, favourite_colour" in infos
    assert any(w.startswith("no column gives 'terrain'") for w in findings["warnings"])
    assert "Shoe size" in editor.get(path).text


def test_a_job_whose_runner_died_shows_interrupted_and_runs_again(
    web: WebServer, editor: httpx.Client, browser: Any
) -> None:
    """A job "running" in a thread of a ``cadence web`` that was restarted since: no heartbeat for
    longer than CADENCE_LEASE_SECONDS. Its page says so (JavaScript off) and its button runs it."""
    settings = web.settings
    job_id = running_job(web, "died.csv", "email,terrain\nrevived@example.com,trails\n", runner="web")
    path = f"/admin/imports/{job_id}"
    assert editor.get(f"{path}/progress.json").json()["state"] == "running"  # still within the lease
    web.clock.advance(timedelta(seconds=settings.lease_seconds + 1))
    progress = editor.get(f"{path}/progress.json").json()
    assert (progress["state"], progress["finished"]) == ("interrupted", True)
    assert 'state-interrupted">interrupted' in editor.get("/admin/imports").text

    context = no_js_page(browser, web, editor)
    try:
        page = context.new_page()
        page.goto(web.url(path))
        assert page.locator("#job-state").inner_text() == "interrupted"
        assert "stopped without finishing" in page.locator("#interrupted").inner_text()
        page.get_by_role("button", name="Run the import again").click()
        page.locator("#job-state", has_text="done").wait_for(timeout=60_000)
    finally:
        context.close()
    assert web.subscriber("revived@example.com") is not None
    with transaction(settings.database_url) as session:
        job = sql.get_job(session, job_id)
        assert job is not None and (job.state, job.created) == ("done", 1)


def test_error_reports_and_unconfirmed_uploads_are_deleted_after_their_time(
    web: WebServer, editor: httpx.Client
) -> None:
    """CADENCE_IMPORT_REPORT_DAYS (30 by default) after the import its error report goes, when
    someone reads the imports; an upload nobody confirmed goes after 24 hours. The clock moves,
    nobody sleeps."""
    days = web.settings.import_report_days
    assert days == 30
    bad = b"email,terrain\ngood@retention.example,trails\nnot-an-address,road\n"
    path = confirm(editor, upload(editor, "retention.csv", bad))
    assert wait_for_job(editor, path)["state"] == "done"
    job_id = int(path.rsplit("/", 1)[1])
    report = web.settings.imports_dir / f"{job_id}.errors.csv"
    assert report.exists()
    waiting = upload(editor, "never-confirmed.csv", b"email\nwait@retention.example\n").headers["location"]
    waiting_file = web.settings.imports_dir / f"{waiting.rsplit('/', 1)[1]}.csv"

    # Console sessions end after 30 idle minutes of the same clock: a new login after each jump.
    later = iter(range(100))

    def after(delta: timedelta) -> httpx.Client:
        web.clock.advance(delta)
        return session_client(web, f"later{next(later)}.editor@clinic.example", "editor")

    client = after(timedelta(hours=23))
    client.get("/admin/imports")
    assert waiting_file.exists() and client.get(f"{waiting}/progress.json").json()["state"] == "pending"
    client = after(timedelta(hours=2))
    client.get("/admin/imports")
    assert not waiting_file.exists()
    assert client.get(f"{waiting}/progress.json").json()["state"] == "cancelled"
    assert "not confirmed within 24 hours" in client.get(waiting).text

    client = after(timedelta(days=days - 2))
    assert client.get(f"{path}/errors.csv").status_code == 200
    assert report.exists()
    client = after(timedelta(days=1, hours=1))
    page = client.get(path).text  # the job page applies it too
    assert not report.exists()
    assert "The error report was deleted on" in page and "kept 30 days" in page
    assert client.get(f"{path}/errors.csv").status_code == 404
    assert client.get(f"{path}/progress.json").json()["report_deleted_at"] is not None
    with transaction(web.settings.database_url) as session:
        assert session.scalar(select(Subscriber.id).where(Subscriber.email_key == "good@retention.example"))


def _imports_on(database_url: str, tmp_path: Path) -> tuple[Settings, FileClock, Callable[[str], int]]:
    """Settings (error reports kept 7 days), a file clock, and a function that uploads, confirms
    and runs an import with one bad row (so it has an error report); its job id."""
    from cadence.operations import import_jobs
    from tests.support.web import START

    clock = FileClock(tmp_path / "clock")
    clock.set(START)
    settings = load_settings(
        cadence_env(tmp_path / "data", CADENCE_DATABASE_URL=database_url, CADENCE_IMPORT_REPORT_DAYS="7")
    )
    upgrade(settings.database_url)

    def imported(name: str) -> int:
        upload = tmp_path / "upload.part"
        upload.write_bytes(f"email,terrain\n{name}@example.com,trails\nnot-an-address,road\n".encode())
        job_id = queued(settings, upload, f"{name}.csv", now=clock.now())
        with transaction(settings.database_url) as session:
            assert import_jobs.confirm_import(session, job_id, actor="user:ann@clinic.example", now=clock.now())
        assert import_jobs.run_import_job(settings, clock, job_id, runner="test") == "done"
        return job_id

    return settings, clock, imported


def test_the_next_import_deletes_old_error_reports_too(database_url: str, tmp_path: Path) -> None:
    """operations.import_jobs on SQLite and PostgreSQL: a job's end applies the retention (for an
    instance whose staff never open the imports pages); the job row stays and says when."""
    from cadence.operations import import_jobs

    settings, clock, imported = _imports_on(database_url, tmp_path)
    first = imported("first")
    assert import_jobs.report_file(settings.imports_dir, first).exists()
    clock.advance(timedelta(days=7, minutes=1))
    second = imported("second")
    assert not import_jobs.report_file(settings.imports_dir, first).exists()
    assert import_jobs.report_file(settings.imports_dir, second).exists()
    with transaction(settings.database_url) as session:
        old, new = sql.get_job(session, first), sql.get_job(session, second)
        assert old is not None and new is not None
        assert (old.has_report, old.report_deleted_at, old.state) == (False, clock.now(), "done")
        assert (new.has_report, new.report_deleted_at) == (True, None)
        assert old.findings is not None and old.findings["stage"] == "import"


def test_an_error_report_being_downloaded_is_sent_whole_when_the_retention_deletes_it(
    database_url: str, tmp_path: Path
) -> None:
    """The download checks the report and starts its response; the retention may run between
    that and the reading of the file (the end of another import, another editor opening the
    imports page). The download already holds the file then: it is sent whole, and is gone
    from the disk afterwards. Before, the file was opened only once the response had started
    (after its first bytes): a 200 cut short by a FileNotFoundError."""
    from cadence.operations import import_jobs

    settings, clock, imported = _imports_on(database_url, tmp_path)
    job_id = imported("downloaded")
    with transaction(settings.database_url) as session:
        found = import_jobs.error_report_download(
            session, settings.imports_dir, job_id, actor="user:ann@clinic.example", now=clock.now()
        )
    assert found is not None
    stream = import_jobs.error_report_rows(*found)
    first = next(stream)  # the response has started
    clock.advance(timedelta(days=7, minutes=1))
    with transaction(settings.database_url) as session:
        assert import_jobs.expire_files(
            session, settings.imports_dir, now=clock.now(), report_days=settings.import_report_days
        ) == (1, 0)
    assert not import_jobs.report_file(settings.imports_dir, job_id).exists()
    body = (first + b"".join(stream)).decode("utf-8-sig")
    assert body.splitlines()[0].startswith("email,terrain") and "not-an-address" in body, body


def test_an_interrupted_job_never_run_again_has_its_upload_deleted_with_the_reports(
    database_url: str, tmp_path: Path
) -> None:
    """The upload holds everyone's rows; it is deleted when its job ends, is cancelled, or stays
    unconfirmed for 24 hours. A confirmed job whose runner died (or that no worker ever took)
    kept it for ever: nobody pressed "Run the import again". After CADENCE_IMPORT_REPORT_DAYS
    of silence (as long as an error report is kept) the job ends "failed", saying why, and its
    upload goes; until then it can still be run again."""
    from cadence.operations import import_jobs

    settings, clock, _ = _imports_on(database_url, tmp_path)
    upload = tmp_path / "upload.part"
    upload.write_bytes(b"email,terrain\nleft@example.com,trails\n")
    job_id = queued(settings, upload, "left.csv", now=clock.now())
    with transaction(settings.database_url) as session:
        assert import_jobs.confirm_import(session, job_id, actor="user:ann@clinic.example", now=clock.now())
    source = import_jobs.job_file(settings.imports_dir, job_id)

    def expire() -> None:
        with transaction(settings.database_url) as session:
            import_jobs.expire_files(session, settings.imports_dir, now=clock.now(), report_days=7)

    clock.advance(timedelta(days=6, hours=23))
    expire()
    assert source.exists()  # interrupted, not yet abandoned: "Run the import again" still works
    clock.advance(timedelta(hours=2))
    expire()
    assert not source.exists()
    with transaction(settings.database_url) as session:
        job = sql.get_job(session, job_id)
        assert job is not None and job.state == "failed" and job.finished_at == clock.now()
        assert "the upload was deleted" in job.message, job.message
    assert import_jobs.run_import_job(settings, clock, job_id, runner="late") == ""  # a late task does nothing


def test_column_names_from_the_file_stay_text_on_the_check_page(web: WebServer) -> None:
    """The check page shows the file's own column names (the table and the findings' sentences):
    markup in a header is escaped. (A session of its own: the tests above move the clock past
    the module's editor's.)"""
    payload = '<img src=x onerror="alert(3)">'
    editor = session_client(web, "columns.editor@clinic.example", "editor")
    check = upload(editor, "columns.csv", f"email,{payload}\nx@columns.example,1\n".encode())
    assert check.status_code == 303, check.text
    page = editor.get(check.headers["location"]).text
    assert payload not in page
    assert "&lt;img src=x onerror=&#34;alert(3)&#34;&gt;" in page  # in the columns table
    # The finding names the attribute the column becomes (statuswords grouped those no segment
    # reads into one line): plain letters, nothing left of the markup.
    assert "stored as attributes that no segment reads: img_src_x_onerror_alert_3" in page
