"""Stored newsletters over real HTTP against a real ``cadence web`` (tokens made by the installed
``cadence tokens add``): field errors as 422 naming the field, 409 with the current version
for a stale save, 423 once scheduled, live preview and counts, and a draft scheduled through the
API delivered once by the send path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default

import httpx
import pytest

from cadence.db.session import transaction
from tests.support.smtpd import SmtpSink
from tests.support.staff import seed
from tests.support.web import WebServer
from tests.test_cli import cadence
from tests.test_staff_api import env_of

DRAFTS = "/api/admin/newsletters/drafts"
FIELDS = {
    "based_on": "lower-back-pain",
    "subject": "April at the clinic",
    "preheader": "New evening hours, and a short routine for stiff hips after long runs.",
    "body": "## Evening hours\n\nWe now open until **8 pm** on Thursdays.",
    "audience": {"topics": ["clinic-news"]},
    "send_at": "now",
}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    extra = {"CADENCE_STAFF_API_PER_MINUTE": "1000"}
    with WebServer(tmp_path_factory.mktemp("drafts-api"), web_sink, extra_env=extra) as server:
        with transaction(server.settings.database_url) as session:
            seed(session)  # Ann: active, asked for clinic news
        yield server


@pytest.fixture(scope="module")
def tokens(web: WebServer) -> dict[str, str]:
    made = {}
    for scope in ("read", "write"):
        ran = cadence(env_of(web), "tokens", "add", f"drafts-{scope}", "--scope", scope, "--json")
        assert ran.status == 0, ran
        made[scope] = json.loads(ran.out)["token"]
    return made


def call(web: WebServer, method: str, path: str, token: str, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **web.from_ip()}
    return httpx.request(method, web.url(path), headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def locs(answer: httpx.Response) -> list[list[object]]:
    assert answer.status_code == 422, answer.text
    return [entry["loc"] for entry in answer.json()["detail"]]


def test_versions_conflicts_and_field_errors_over_http(web: WebServer, tokens: dict[str, str]) -> None:
    reader, writer = tokens["read"], tokens["write"]
    new = {"id": "may-news", "fields": {"based_on": "lower-back-pain", "subject": "May"}}
    assert call(web, "POST", DRAFTS, reader, json=new).status_code == 403
    created = call(web, "POST", DRAFTS, writer, json=new)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["ready"] is False
    assert "audience" in [m["field"] for m in created.json()["missing"]]
    assert call(web, "POST", DRAFTS, writer, json=new).status_code == 409  # the name is taken
    clash = call(web, "POST", DRAFTS, writer, json={**new, "id": "clinic-news-2027-01"})
    assert clash.status_code == 409 and "newsletter file" in clash.json()["detail"]

    saved = call(web, "PUT", f"{DRAFTS}/may-news", writer, json={"version": 1, "fields": FIELDS})
    assert saved.status_code == 200 and saved.json()["version"] == 2 and saved.json()["ready"] is True
    stale = call(web, "PUT", f"{DRAFTS}/may-news", writer, json={"version": 1, "fields": {**FIELDS, "subject": "X"}})
    assert stale.status_code == 409 and stale.json()["current_version"] == 2
    assert call(web, "GET", f"{DRAFTS}/may-news", reader).json()["fields"]["subject"] == "April at the clinic"

    bad_rule = {**FIELDS, "audience": {"topics": ["clinic-news"], "rules": [{"attribute": "terrain", "op": "like"}]}}
    answer = call(web, "PUT", f"{DRAFTS}/may-news", writer, json={"version": 2, "fields": bad_rule})
    assert locs(answer) == [["body", "fields", "audience", "rules", 0, "op"]]
    long_subject = call(
        web, "PUT", f"{DRAFTS}/may-news", writer, json={"version": 2, "fields": {**FIELDS, "subject": "x" * 121}}
    )
    assert locs(long_subject) == [["body", "fields", "subject"]]
    assert "120" in long_subject.json()["detail"][0]["msg"]
    unknown = call(web, "PUT", f"{DRAFTS}/may-news", writer, json={"version": 2, "fields": {**FIELDS, "colour": "red"}})
    assert ["body", "fields", "colour"] in locs(unknown)
    bad_id = call(web, "POST", DRAFTS, writer, json={"id": "No Spaces", "fields": FIELDS})
    assert locs(bad_id) == [["body", "id"]]

    history = call(web, "GET", f"{DRAFTS}/may-news/history", reader).json()
    assert [v["version"] for v in history] == [2, 1]
    assert "may-news" in [d["id"] for d in call(web, "GET", DRAFTS, reader).json()]
    assert "may-news" in [n["id"] for n in call(web, "GET", "/api/admin/newsletters", reader).json()]
    assert call(web, "DELETE", f"{DRAFTS}/may-news?version=1", writer).status_code == 409
    assert call(web, "DELETE", f"{DRAFTS}/may-news?version=2", writer).json() == {"deleted": "may-news"}
    assert call(web, "GET", f"{DRAFTS}/may-news", reader).status_code == 404
    audit = call(web, "GET", "/api/admin/audit?limit=4&target=newsletter:may-news", reader).json()
    assert [(e["actor"], e["action"]) for e in audit] == [
        ("token:drafts-write", "newsletter.delete"),
        ("token:drafts-write", "newsletter.update"),
        ("token:drafts-write", "newsletter.create"),
    ]


def test_hostile_text_is_kept_verbatim_and_previewed_escaped(web: WebServer, tokens: dict[str, str]) -> None:
    fields = {**FIELDS, "subject": "<script>alert(1)</script>", "body": "Hi <img src=x onerror=alert(2)>"}
    created = call(web, "POST", DRAFTS, tokens["write"], json={"id": "hostile", "fields": fields})
    assert created.status_code == 201, created.text
    stored = call(web, "GET", f"{DRAFTS}/hostile", tokens["read"]).json()["fields"]
    assert (stored["subject"], stored["body"]) == (fields["subject"], fields["body"])
    shown = call(web, "GET", f"{DRAFTS}/hostile/preview", tokens["read"]).json()
    assert shown["subject"] == "<script>alert(1)</script>"  # plain text in a header
    assert "<script>" not in shown["html"] and "<img src=x" not in shown["html"]
    assert "&lt;img src=x onerror=alert(2)&gt;" in shown["html"]


def test_an_issue_longer_than_a_form_is_saved(web: WebServer, tokens: dict[str, str]) -> None:
    # The body guard's 8 KB form limit once applied here: no real issue could be saved.
    body = "\n\n".join(f"Paragraph {n}: stretch your hips after long runs." for n in range(1500))
    assert len(body) > 60_000
    created = call(web, "POST", DRAFTS, tokens["write"], json={"id": "long-issue", "fields": {**FIELDS, "body": body}})
    assert created.status_code == 201, created.text
    assert call(web, "GET", f"{DRAFTS}/long-issue", tokens["read"]).json()["fields"]["body"] == body


def test_live_preview_and_counts_without_saving(web: WebServer, tokens: dict[str, str]) -> None:
    reader = tokens["read"]
    half = {"fields": {"based_on": "lower-back-pain", "body": "# Draft in progress"}}
    shown = call(web, "POST", f"{DRAFTS}/preview", reader, json=half)
    assert shown.status_code == 200, shown.text
    assert shown.json()["subject"] == "(no subject yet)" and "Draft in progress" in shown.json()["text"]
    assert "audience" in [p["field"] for p in shown.json()["problems"]]
    counted = call(web, "POST", f"{DRAFTS}/audience", reader, json={"fields": FIELDS})
    assert counted.status_code == 200 and counted.json()["total"] == 1  # Ann
    bad = {"fields": {**FIELDS, "audience": {"tags": ["vip"], "match": "some"}}}
    assert locs(call(web, "POST", f"{DRAFTS}/audience", reader, json=bad)) == [["body", "fields", "audience", "match"]]
    assert "preview" not in [d["id"] for d in call(web, "GET", DRAFTS, reader).json()]


def test_a_draft_scheduled_through_the_api_is_locked_and_sent_once(
    web: WebServer, web_sink: SmtpSink, tokens: dict[str, str]
) -> None:
    reader, writer = tokens["read"], tokens["write"]
    assert call(web, "POST", DRAFTS, writer, json={"id": "june-news", "fields": FIELDS}).status_code == 201
    tested = call(web, "POST", f"{DRAFTS}/june-news/send-test", writer, json={"to": ["me@example.org"]})
    assert tested.status_code == 200 and tested.json()["sent"] == 1
    before = len(web_sink.messages)
    # Results item 4: "as this subscriber", as the composer's (their address or id); nothing is
    # sent for an unknown one.
    test_to = f"{DRAFTS}/june-news/send-test"
    unknown = call(web, "POST", test_to, writer, json={"to": ["me@example.org"], "subscriber": "x@no.example"})
    assert unknown.status_code == 422 and "subscriber: no subscriber 'x@no.example'" in unknown.text, unknown.text
    # An id past the database's integers, or "digits" int() refuses: the same 422, never a 500.
    for odd in ("99999999999999999999", "\u00b2"):
        refused = call(web, "POST", test_to, writer, json={"to": ["me@example.org"], "subscriber": odd})
        assert refused.status_code == 422 and f"subscriber: no subscriber {odd!r}" in refused.text, refused.text
    assert len(web_sink.messages) == before
    as_ann = call(web, "POST", test_to, writer, json={"to": ["me@example.org"], "subscriber": "ann@example.com"})
    assert as_ann.status_code == 200 and as_ann.json()["sent"] == 1, as_ann.text
    arrived = web_sink.wait_for(before + 1)[before]
    assert arrived.rcpt_tos == ("me@example.org",)  # to the tester, never to Ann
    text = message_from_bytes(arrived.data, policy=default).get_body(preferencelist=("plain",))
    assert text is not None and "Hi Ann," in text.get_content()  # her data
    # Whose data went to which address: the audit log says (a test sends her rows outside).
    [entry] = call(web, "GET", "/api/admin/audit?limit=1&target=newsletter:june-news", reader).json()
    ann = web.subscriber("ann@example.com")
    assert ann is not None and entry["action"] == "newsletter.send_test"
    assert (entry["detail"]["to"], entry["detail"]["data_of"]) == (["me@example.org"], f"subscriber:{ann.id}"), entry
    before = len(web_sink.messages)
    stale = call(web, "POST", f"{DRAFTS}/june-news/schedule", writer, json={"version": 7})
    assert stale.status_code == 409 and stale.json()["current_version"] == 1
    scheduled = call(web, "POST", f"{DRAFTS}/june-news/schedule", writer, json={"version": 1})
    assert scheduled.status_code == 200 and scheduled.json()["recipients"] == 1, scheduled.text

    locked = call(
        web, "PUT", f"{DRAFTS}/june-news", writer, json={"version": 1, "fields": {**FIELDS, "subject": "Changed"}}
    )
    assert locked.status_code == 423 and locked.json()["state"] == "scheduled"
    assert "locked" in locked.json()["detail"]
    assert call(web, "DELETE", f"{DRAFTS}/june-news", writer).status_code == 423

    assert web.drive() == 1
    assert web.drive() == 0  # once
    received = web_sink.wait_for(before + 1)[before:]
    message = message_from_bytes(received[-1].data, policy=default)
    assert message["Subject"] == "April at the clinic" and "ann@example.com" in str(message["To"]).lower()
    status = call(web, "GET", "/api/admin/newsletters/june-news", reader).json()
    assert (status["state"], status["sent"]) == ("sent", 1)
    assert call(web, "GET", f"{DRAFTS}/june-news", reader).json()["state"] == "sent"


def test_the_draft_routes_are_in_the_openapi_document(web: WebServer) -> None:
    paths = httpx.get(web.url("/openapi.json")).json()["paths"]
    wanted = {"", "/preview", "/audience", "/{draft}", "/{draft}/history", "/{draft}/schedule", "/{draft}/send-test"}
    assert {f"{DRAFTS}{p}" for p in wanted} <= set(paths)
