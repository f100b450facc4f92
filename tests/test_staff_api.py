"""The staff API over real HTTP against a real ``cadence web``: bearer tokens made by
``cadence tokens add``, scopes enforced by the server, 401/403/429 as JSON, the same operations
as the CLI, each action in the audit log as ``token:<name>``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest

from cadence.db.session import transaction
from tests.support.smtpd import SmtpSink
from tests.support.staff import CAMPAIGN, seed
from tests.support.web import WebServer
from tests.test_cli import cadence

PER_MINUTE = 40


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    extra = {"CADENCE_STAFF_API_PER_MINUTE": str(PER_MINUTE)}
    with WebServer(tmp_path_factory.mktemp("staff-api"), web_sink, extra_env=extra) as server:
        with transaction(server.settings.database_url) as session:
            seed(session)
        yield server


def env_of(web: WebServer) -> dict[str, str]:
    import os

    return {**os.environ, **web.env, "COLUMNS": "200"}


@pytest.fixture(scope="module")
def tokens(web: WebServer) -> dict[str, str]:
    """One token per scope, made with the installed command (shown once, as JSON)."""
    made = {}
    for scope in ("read", "write", "admin"):
        ran = cadence(env_of(web), "tokens", "add", f"{scope}-bot", "--scope", scope, "--json")
        assert ran.status == 0, ran
        made[scope] = json.loads(ran.out)["token"]
    return made


def call(web: WebServer, method: str, path: str, token: str | None = None, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, web.url(path), headers={**headers, **web.from_ip()}, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_no_token_or_a_wrong_one_is_401_json_and_tokens_are_stored_hashed(
    web: WebServer, tokens: dict[str, str]
) -> None:
    for token in (None, "cad_not-a-real-token", tokens["read"] + "x"):
        answer = call(web, "GET", "/api/staff/subscribers", token)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["detail"]
    basic = httpx.get(web.url("/api/staff/audit"), headers={"Authorization": "Basic dTpw", **web.from_ip()})
    assert basic.status_code == 401
    dump = web.dump()
    assert all(token not in dump for token in tokens.values())  # only digests at rest


def test_scopes_are_enforced_by_the_server(web: WebServer, tokens: dict[str, str]) -> None:
    reason = {"reason": "asked by phone"}
    denied = call(web, "POST", "/api/staff/subscribers/cy@example.com/suppression", tokens["read"], json=reason)
    assert denied.status_code == 403 and denied.json() == {"detail": "this token's scope is read; this needs write"}
    assert call(web, "DELETE", "/api/staff/subscribers/cy@example.com", tokens["write"]).status_code == 403
    done = call(web, "POST", "/api/staff/subscribers/cy@example.com/suppression", tokens["write"], json=reason)
    assert done.status_code == 200 and done.json()["changed"] is True
    assert call(web, "DELETE", "/api/staff/subscribers/cy@example.com/suppression", tokens["admin"]).status_code == 200
    erased = call(web, "DELETE", "/api/staff/subscribers/dee@example.org", tokens["admin"])
    assert erased.status_code == 200 and erased.json()["status"] == "erased"
    assert call(web, "GET", "/api/staff/subscribers/dee@example.org", tokens["read"]).status_code == 404
    audit = call(web, "GET", "/api/staff/audit?limit=3", tokens["read"]).json()
    assert [(e["actor"], e["action"]) for e in audit] == [
        ("token:admin-bot", "subscriber.erase"),
        ("token:admin-bot", "subscriber.unsuppress"),
        ("token:write-bot", "subscriber.suppress"),
    ]


def test_search_show_tag_export_and_report(web: WebServer, tokens: dict[str, str]) -> None:
    found = call(web, "GET", "/api/staff/subscribers?q=EXAMPLE.COM&status=active&limit=1", tokens["read"])
    assert found.status_code == 200 and [s["email"] for s in found.json()["subscribers"]] == ["Ann@Example.com"]
    profile = call(web, "GET", "/api/staff/subscribers/ann@example.com", tokens["read"]).json()
    assert profile["tags"] == ["vip"] and {"sent", "open", "click"} <= {t["what"] for t in profile["timeline"]}
    viewed = call(web, "GET", f"/api/staff/audit?limit=1&target=subscriber:{profile['id']}", tokens["read"]).json()
    assert [(e["actor"], e["action"]) for e in viewed] == [("token:read-bot", "subscriber.view")]  # who looked
    tagged = call(
        web,
        "POST",
        "/api/staff/subscribers/tags",
        tokens["write"],
        json={"emails": ["bob@example.com"], "add": ["roads"]},
    )
    assert tagged.json() == {"subscribers": 1, "added": 1, "removed": 0, "goals_reached": 0}
    bad = call(
        web,
        "POST",
        "/api/staff/subscribers/tags",
        tokens["write"],
        json={"emails": ["bob@example.com"], "add": ["a b"]},
    )
    assert bad.status_code == 422 and "is not a tag" in json.dumps(bad.json())
    missing = call(
        web, "POST", "/api/staff/subscribers/tags", tokens["write"], json={"emails": ["x@example.com"], "add": ["a"]}
    )
    assert missing.status_code == 404

    exported = call(web, "GET", "/api/staff/subscribers/export?tag=roads", tokens["read"])
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert [r["email"] for r in csv.DictReader(io.StringIO(exported.text))] == ["bob@example.com"]
    lines = call(web, "GET", "/api/staff/subscribers/export?format=json&q=ann", tokens["read"]).text.splitlines()
    assert [json.loads(line)["email"] for line in lines] == ["Ann@Example.com"]

    report = call(web, "GET", f"/api/staff/report/{CAMPAIGN}?since=2026-12-01", tokens["read"])
    assert report.status_code == 200 and report.json()["total"]["unique_opens"] == 2
    assert "Apple Mail Privacy Protection" in report.json()["opens_caveat"]
    assert "daily" not in report.json()
    days = call(web, "GET", f"/api/admin/report/{CAMPAIGN}?daily=true", tokens["read"]).json()["daily"]
    assert sum(d["opens"] for d in days) == 2 and {"day", "sent", "clicks", "unsubscribes", "bounces"} <= set(days[0])
    assert call(web, "GET", "/api/staff/report/nosuch", tokens["read"]).status_code == 404
    assert call(web, "GET", f"/api/staff/report/{CAMPAIGN}?since=soon", tokens["read"]).status_code == 422


def test_the_staff_routes_are_in_the_openapi_document(web: WebServer) -> None:
    paths = httpx.get(web.url("/openapi.json")).json()["paths"]
    named = {"subscribers", "report/{campaign}", "audit", "campaigns", "campaigns/{campaign}/cancel"}
    named |= {"newsletters/{newsletter}/schedule", "newsletters/{newsletter}/send-test"}
    assert {f"/api/admin/{p}" for p in named} <= set(paths)
    # /api/admin is the name; /api/staff is the older one, still answering (tested above) but
    # documented once only.
    assert not [p for p in paths if p.startswith("/api/staff/")]


def test_a_revoked_token_stops_at_once_and_tokens_list_shows_no_secret(web: WebServer, tokens: dict[str, str]) -> None:
    ran = cadence(env_of(web), "tokens", "add", "temp", "--scope", "read", "--json")
    temp = json.loads(ran.out)["token"]
    assert call(web, "GET", "/api/staff/audit", temp).status_code == 200
    assert cadence(env_of(web), "tokens", "revoke", "temp").status == 0
    assert call(web, "GET", "/api/staff/audit", temp).status_code == 401
    listed = cadence(env_of(web), "tokens", "list", "--json")
    rows = {t["name"]: t for t in json.loads(listed.out)}
    assert rows["temp"]["revoked_at"] and rows["read-bot"]["last_used_at"] and temp not in listed.out
    again = cadence(env_of(web), "tokens", "add", "temp", "--scope", "read")
    assert again.status == 1 and "exists already" in again.err
    assert cadence(env_of(web), "tokens", "add", "x", "--scope", "root").status == 1


def test_each_token_is_rate_limited(web: WebServer, tokens: dict[str, str], tmp_path: Path) -> None:
    ran = cadence(env_of(web), "tokens", "add", "busy", "--scope", "read", "--json")
    busy = json.loads(ran.out)["token"]
    codes = [call(web, "GET", "/api/staff/audit?limit=1", busy).status_code for _ in range(PER_MINUTE + 1)]
    assert codes[:PER_MINUTE] == [200] * PER_MINUTE and codes[-1] == 429
    limited = call(web, "GET", "/api/staff/audit?limit=1", busy)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0 and limited.json()["detail"]
    assert call(web, "GET", "/api/staff/audit?limit=1", tokens["read"]).status_code == 200  # others go on


def _token(web: WebServer, name: str, scope: str) -> str:
    ran = cadence(env_of(web), "tokens", "add", name, "--scope", scope, "--json")
    assert ran.status == 0, ran
    return str(json.loads(ran.out)["token"])


def _audited(web: WebServer, reader: str, target: str, limit: int) -> list[tuple[str, str]]:
    audit = call(web, "GET", f"/api/admin/audit?limit={limit}&target={target}", reader).json()
    return [(e["actor"], e["action"]) for e in audit]


def test_campaigns_listed_paused_resumed_test_sent_and_cancelled_only_when_confirmed(
    web: WebServer, web_sink: SmtpSink
) -> None:
    reader, writer = _token(web, "campaign-reader", "read"), _token(web, "campaign-writer", "write")
    listed = call(web, "GET", "/api/admin/campaigns", reader)
    assert listed.status_code == 200 and CAMPAIGN in [c["id"] for c in listed.json()]
    assert call(web, "GET", f"/api/staff/campaigns/{CAMPAIGN}", reader).json()["state"] == "running"  # the alias
    assert call(web, "GET", "/api/admin/campaigns/nosuch", reader).status_code == 404
    assert call(web, "GET", "/api/admin/campaigns", None).status_code == 401
    assert call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/pause", reader).status_code == 403

    paused = call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/pause", writer)
    assert paused.status_code == 200 and paused.json()["state"] == "paused" and paused.json()["changed"]
    assert call(web, "GET", f"/api/admin/campaigns/{CAMPAIGN}", reader).json()["state"] == "paused"
    assert call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/pause", writer).json()["changed"] is False
    assert call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/resume", writer).json()["state"] == "running"
    unknown = call(web, "POST", "/api/admin/campaigns/lower-back-pian/pause", writer)
    assert unknown.status_code == 404 and "did you mean 'lower-back-pain'" in unknown.json()["detail"]

    before = len(web_sink.messages)
    sent = call(
        web,
        "POST",
        f"/api/admin/campaigns/{CAMPAIGN}/send-test",
        writer,
        json={"step": "1", "segment": "trail+race", "to": ["me@example.org"]},
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["sent"] == ["me@example.org"] and sent.json()["subject"].startswith("[TEST] ")
    assert len(web_sink.wait_for(before + 1)) == before + 1
    no_step = call(
        web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/send-test", writer, json={"step": "9", "to": ["a@b.org"]}
    )
    assert no_step.status_code == 404 and "no step '9'" in no_step.json()["detail"]
    # An unknown subscriber is a wrong field, named as the body calls it; nothing is sent.
    before = len(web_sink.messages)
    nobody = {"step": "1", "to": ["a@b.org"], "subscriber": "nobody@example.com"}
    refused = call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/send-test", writer, json=nobody)
    assert refused.status_code == 422, refused.text
    said = refused.json()["detail"][0]["msg"]
    assert said == "subscriber: no subscriber 'nobody@example.com' (give their address or id)", said
    assert len(web_sink.messages) == before
    for bad in ({"step": "1", "to": ["not-an-address"]}, {"step": "1"}, {"step": "1", "to": ["a@b.org,c@d.org"]}):
        refused = call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/send-test", writer, json=bad)
        assert refused.status_code == 422 and refused.json()["detail"][0]["msg"], (bad, refused.text)

    for body in ({}, {"confirm": "yes"}, {"confirm": "lower-back"}):
        refused = call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/cancel", writer, json=body)
        assert refused.status_code == 422, (body, refused.text)
    assert call(web, "GET", f"/api/admin/campaigns/{CAMPAIGN}", reader).json()["state"] == "running"
    cancelled = call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/cancel", writer, json={"confirm": CAMPAIGN})
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = call(web, "POST", f"/api/admin/campaigns/{CAMPAIGN}/resume", writer)
    assert again.status_code == 422 and "cannot be resumed" in again.json()["detail"][0]["msg"]
    assert _audited(web, reader, f"campaign:{CAMPAIGN}", 5) == [
        ("token:campaign-writer", "campaign.cancel"),
        ("token:campaign-writer", "campaign.send_test"),
        ("token:campaign-writer", "campaign.resume"),
        ("token:campaign-writer", "campaign.pause"),
    ]


def test_a_newsletter_counted_scheduled_paused_resumed_tested_and_cancelled(web: WebServer, web_sink: SmtpSink) -> None:
    news = "clinic-news-2027-01"
    reader, writer = _token(web, "news-reader", "read"), _token(web, "news-writer", "write")
    assert news in [n["id"] for n in call(web, "GET", "/api/admin/newsletters", reader).json()]
    assert call(web, "GET", f"/api/admin/newsletters/{news}", reader).json()["state"] == "draft"
    assert call(web, "GET", "/api/admin/newsletters/nosuch", reader).status_code == 404
    audience = call(web, "GET", f"/api/admin/newsletters/{news}/audience", reader)
    assert audience.status_code == 200 and audience.json()["total"] == 1  # Ann asked for clinic news
    assert call(web, "POST", f"/api/admin/newsletters/{news}/schedule", reader, json={}).status_code == 403
    past = call(web, "POST", f"/api/admin/newsletters/{news}/schedule", writer, json={"at": "2020-01-01 09:00 local"})
    assert past.status_code == 422 and past.json()["detail"][0]["msg"]
    scheduled = call(web, "POST", f"/api/admin/newsletters/{news}/schedule", writer, json={})
    assert scheduled.status_code == 200 and scheduled.json()["recipients"] == 1, scheduled.text
    assert call(web, "POST", f"/api/admin/newsletters/{news}/pause", writer).json()["state"] == "paused"
    assert call(web, "POST", f"/api/admin/newsletters/{news}/resume", writer).json()["state"] == "scheduled"
    before = len(web_sink.messages)
    tested = call(web, "POST", f"/api/admin/newsletters/{news}/send-test", writer, json={"to": ["me@example.org"]})
    assert tested.status_code == 200 and tested.json()["sent"] == 1, tested.text
    assert len(web_sink.wait_for(before + 1)) == before + 1
    # Filled with a chosen subscriber's data (Ann's greeting), still marked and uncounted.
    as_ann = {"to": ["me@example.org"], "subscriber": "ann@example.com"}
    tested = call(web, "POST", f"/api/admin/newsletters/{news}/send-test", writer, json=as_ann)
    assert tested.status_code == 200 and tested.json()["data_of"] == "ann@example.com", tested.text
    html = message_from_bytes(web_sink.wait_for(before + 2)[-1].data, policy=policy.default)
    assert "Hi Ann," in html.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    nobody = {"to": ["me@example.org"], "subscriber": "nobody@example.com"}
    missing = call(web, "POST", f"/api/admin/newsletters/{news}/send-test", writer, json=nobody)
    assert missing.status_code == 404 and "nobody@example.com" in missing.json()["detail"]
    bad = call(web, "POST", f"/api/admin/newsletters/{news}/send-test", writer, json={"to": ["x"]})
    assert bad.status_code == 422
    assert call(web, "POST", f"/api/admin/newsletters/{news}/cancel", writer, json={"confirm": "x"}).status_code == 422
    cancelled = call(web, "POST", f"/api/admin/newsletters/{news}/cancel", writer, json={"confirm": news})
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert call(web, "GET", f"/api/admin/newsletters/{news}", reader).json()["state"] == "cancelled"
    assert _audited(web, reader, f"newsletter:{news}", 6) == [
        ("token:news-writer", f"newsletter.{a}")
        for a in ("cancel", "send_test", "send_test", "resume", "pause", "schedule")
    ]
