"""A short hostile review of the console and the staff API (after the slow-client work, see
tests/test_web_slow_clients.py), over real HTTP against a real ``cadence web``: each finding
pinned by the request that showed it, and the probes that found nothing pinned as they are.

Fixed:

- The import's error report is a GET that writes an audit row and hands over people's rows: a
  link or redirect on another site made an editor's browser fetch it (the session cookie is
  SameSite=Lax). A request the browser marks ``Sec-Fetch-Site: cross-site``/``same-site`` is
  now refused.

- The staff API's bodies had the pages' 8 KB cap: ``POST /api/admin/subscribers/tags`` with the
  1,000 addresses its model allows (~28 KB) was a 413. Its limit is now the composer's 2 MiB
  (only token holders get a body read at all).
- A campaign name reached the file system before it was checked: ``CampaignCatalog.get`` tested
  ``campaigns_dir / f"{name}.yaml"`` first, so ``../elsewhere/x`` told an existing file from a
  missing one, and an absolute name (``Path / "/abs"`` is ``/abs``) could load a file outside
  ``campaigns/``. The composer passes its ``based_on`` field there.

Probed, nothing to fix: a CR/LF in a test send's address (refused, nothing sent), a login's
``next`` leading elsewhere (only composer pages), NUL and deep JSON (web/body_guard.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cadence.db.session import transaction
from cadence.errors import NotFound
from cadence.files.catalog import CampaignCatalog
from cadence.operations.staff_access import create_token
from tests.support.composer import editor_client
from tests.support.smtpd import SmtpSink
from tests.support.web import REPO, WebServer, csrf_token


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    with WebServer(tmp_path_factory.mktemp("hostile-review"), web_sink) as server:
        yield server


def _token(web: WebServer, scope: str) -> str:
    with transaction(web.settings.database_url) as session:
        return create_token(session, f"review-{scope}", scope, actor="cli:test", now=web.clock.now())[0]


def test_a_write_token_may_send_the_1000_addresses_the_tags_model_allows(web: WebServer) -> None:
    headers = {"Authorization": f"Bearer {_token(web, 'write')}", **web.from_ip()}
    emails = [f"reader-number-{n:04d}@example.com" for n in range(1000)]
    answer = httpx.post(
        web.url("/api/admin/subscribers/tags"), json={"emails": emails, "add": ["spring"]}, headers=headers, timeout=30
    )
    assert answer.status_code != 413, answer.text
    assert answer.status_code in (200, 404), answer.text  # the operation's answer (these are unknown)
    too_many = httpx.post(
        web.url("/api/admin/subscribers/tags"),
        json={"emails": [*emails, "one-more@example.com"], "add": ["spring"]},
        headers=headers,
        timeout=30,
    )
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"][-1] == "emails"


def test_a_test_send_to_an_address_with_a_header_in_it_sends_nothing(web: WebServer, web_sink: SmtpSink) -> None:
    client = editor_client(web, "header.injector@clinic.example")
    token = csrf_token(client.get("/admin/campaigns").text)
    before = len(web_sink.messages)
    # (Several addresses separated by commas are a feature of test sends: an editor's choice.)
    for to in ("me@example.com\r\nBcc: victim@example.net", '"Me\r\nBcc: victim@example.net" <me@example.com>'):
        for campaign in ("lower-back-pain", "clinic-news-2027-01"):
            answer = client.post(f"/admin/campaigns/{campaign}/test", data={"csrf_token": token, "to": to})
            assert answer.status_code == 400, answer.text[:300]
    assert len(web_sink.messages) == before
    assert not any("victim@example.net" in str(m.rcpt_tos) for m in web_sink.messages)


def test_another_site_cannot_make_an_editors_browser_download_an_error_report(web: WebServer) -> None:
    """The download is a GET that writes an audit row (and saves people's rows to disk)."""
    client = editor_client(web, "report.reader@clinic.example")
    for site in ("cross-site", "same-site"):
        refused = client.get("/admin/imports/1/errors.csv", headers={"Sec-Fetch-Site": site})
        assert refused.status_code == 403
        assert "its import" in refused.text
    # From our own page (or typed, or a script without the header): the usual answer.
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        assert client.get("/admin/imports/1/errors.csv", headers=headers).status_code == 404  # no such job


def test_a_login_never_leads_to_another_site(web: WebServer) -> None:
    with web.client() as client:
        for target in ("//evil.example/", "https://evil.example/admin", "/\\evil.example", "/admin/../\\evil"):
            page = client.get("/admin/login", params={"next": target})
            assert page.status_code == 200
            assert "evil.example" not in page.text


def test_a_campaign_name_never_reaches_the_file_system(tmp_path: Path) -> None:
    campaigns = tmp_path / "campaigns"
    shutil.copytree(REPO / "campaigns", campaigns)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "present.yaml").write_text("id: present\n")
    catalog = CampaignCatalog(campaigns, REPO / "templates")
    answers = []
    for name in ("../elsewhere/present", "../elsewhere/absent"):
        with pytest.raises(NotFound) as refused:
            catalog.get(name)
        answers.append(str(refused.value).replace(name, "NAME"))
    assert answers[0] == answers[1]  # no way to tell an existing file from a missing one
    assert "lowercase letters" in answers[0]
    # An absolute name: Path("/campaigns") / "/abs/x.yaml" is "/abs/x.yaml" (the drip copied there).
    shutil.copy(campaigns / "lower-back-pain.yaml", elsewhere / "copy.yaml")
    shutil.copy(campaigns / "lower-back-pain.yaml", elsewhere / "copy.yaml.yaml")
    with pytest.raises(NotFound):
        catalog.get(str(elsewhere / "copy.yaml"))
    assert catalog.get("lower-back-pain").id == "lower-back-pain"  # names still work
