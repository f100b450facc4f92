"""The staff's subscriber tools: search, show, export, erase, suppress, unsuppress and tags, as
operations on real SQLite and PostgreSQL and through the installed ``cadence`` command."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cadence.config import load_settings, os_user
from cadence.db.migrate import upgrade
from cadence.db.models import AuditEntry, Enrollment
from cadence.db.session import transaction
from cadence.errors import InputError, NotFound
from cadence.files.catalog import CampaignCatalog
from cadence.operations import subscriber_tools as tools
from cadence.operations.subscriber_export import export_subscribers
from cadence.operations.subscriber_tools import SegmentFilter, SubscriberFilter
from tests.support.cluster import ROOT, cadence_env
from tests.support.keys import TEST_KEYS
from tests.support.staff import CAMPAIGN, LINK_A, T0, seed
from tests.test_cli import cadence, one_error_line

LBP = CampaignCatalog(ROOT / "campaigns", ROOT / "templates").get(CAMPAIGN)
TODAY = T0.date()


def emails(page: tools.SearchPage) -> list[str]:
    return [s.email for s in page.subscribers]


def test_search_export_tag_suppress_and_erase_as_operations(database_url: str) -> None:
    upgrade(database_url)
    with transaction(database_url) as session:
        seed(session)
    with transaction(database_url) as session:
        find = tools.search_subscribers
        assert emails(find(session, SubscriberFilter(text="EXAMPLE.COM"), TODAY)) == [
            "Ann@Example.com",
            "bob@example.com",
            "cy@example.com",
        ]
        assert emails(find(session, SubscriberFilter(text="de"), TODAY)) == ["dee@example.org"]  # the name too
        assert emails(find(session, SubscriberFilter(text="%"), TODAY)) == []  # LIKE wildcards are text
        assert emails(find(session, SubscriberFilter(statuses=("bounced",)), TODAY)) == ["bob@example.com"]
        assert emails(find(session, SubscriberFilter(tags=("vip",)), TODAY)) == ["Ann@Example.com"]
        trail = SubscriberFilter(segment=SegmentFilter(LBP, "trail+no-race"))
        assert emails(find(session, trail, TODAY)) == ["Ann@Example.com"]
        assert emails(find(session, SubscriberFilter(attrs=(("terrain", "ROAD"),)), TODAY)) == [
            "bob@example.com",
            "dee@example.org",
        ]
        first = find(session, SubscriberFilter(), TODAY, limit=3)
        assert len(first.subscribers) == 3 and first.next_after is not None
        rest = find(session, SubscriberFilter(), TODAY, limit=3, after=first.next_after)
        assert emails(rest) == ["dee@example.org"] and rest.next_after is None
        with pytest.raises(InputError, match="--limit"):
            find(session, SubscriberFilter(), TODAY, limit=0)
        with pytest.raises(InputError, match="--status: 'gone' is not one of"):
            tools.check_statuses(["gone"])

        out = io.StringIO()
        count = export_subscribers(
            session, SubscriberFilter(statuses=("active",)), TODAY, out, fmt="csv", actor="test", now=T0
        )
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert count == 2 and [r["email"] for r in rows] == ["Ann@Example.com", "cy@example.com"]
        assert rows[0]["tags"] == "vip" and rows[0]["terrain"] == "trails" and rows[1]["terrain"] == ""
        lines = io.StringIO()
        export_subscribers(session, SubscriberFilter(), TODAY, lines, fmt="json", actor="test", now=T0)
        assert [json.loads(line)["email"] for line in lines.getvalue().splitlines()][-1] == "dee@example.org"

        change = tools.tag_subscribers(
            session,
            wanted=SubscriberFilter(attrs=(("terrain", "road"),)),
            today=TODAY,
            add=["Road-Runner"],
            actor="test",
            now=T0,
        )
        assert (change.subscribers, change.added) == (2, 1 + 1)
        again = tools.tag_subscribers(
            session, emails=["BOB@example.com"], today=TODAY, add=["road-runner"], remove=["vip"], actor="test", now=T0
        )
        assert (again.added, again.removed) == (0, 0)
        with pytest.raises(NotFound, match=r"no subscriber 'nobody@example\.com'"):
            tools.tag_subscribers(
                session, emails=["bob@example.com", "nobody@example.com"], today=TODAY, add=["x"], actor="test", now=T0
            )
        with pytest.raises(InputError, match="--add: 'no spaces' is not a tag"):
            tools.tag_subscribers(
                session, emails=["bob@example.com"], today=TODAY, add=["no spaces"], actor="t", now=T0
            )

        assert tools.suppress_subscriber(session, "cy@example.com", reason="asked by phone", actor="t", now=T0).changed
        assert not tools.suppress_subscriber(session, "cy@example.com", reason="again", actor="t", now=T0).changed
        cy = tools.find(session, "cy@example.com")
        enrollment = session.scalar(select(Enrollment).where(Enrollment.subscriber_id == cy.id))
        assert enrollment is not None and enrollment.state == "cancelled"
        with pytest.raises(InputError, match="--reason"):
            tools.suppress_subscriber(session, "cy@example.com", reason=" ", actor="t", now=T0)
        bob = tools.unsuppress_subscriber(session, "bob@example.com", keys=TEST_KEYS, actor="t", now=T0)
        assert "active again" in bob.note and tools.find(session, "bob@example.com").status == "active"
        assert tools.unsuppress_subscriber(session, "cy@example.com", keys=TEST_KEYS, actor="t", now=T0).changed

        tools.erase_subscriber(session, "dee@example.org", keys=TEST_KEYS, actor="t", now=T0)
        with pytest.raises(NotFound):
            tools.find(session, "dee@example.org")
        with pytest.raises(InputError, match="was erased at the person's request"):
            tools.unsuppress_subscriber(session, "dee@example.org", keys=TEST_KEYS, actor="t", now=T0)
        actions = [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert actions == [
            "subscribers.export",
            "subscribers.export",
            "subscribers.tag",
            "subscribers.tag",
            "subscriber.suppress",
            "subscriber.suppress",
            "subscriber.unsuppress",
            "subscriber.unsuppress",
            "subscriber.erase",
        ]
        assert all("dee@" not in repr((e.target, e.detail)) for e in session.scalars(select(AuditEntry)))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("staff")
    (tmp / "clock").write_text((T0 + timedelta(days=2)).isoformat())
    env = cadence_env(tmp / "data", CADENCE_CLOCK=f"file:{tmp / 'clock'}", COLUMNS="220")
    url = load_settings(env).database_url
    upgrade(url)
    with transaction(url) as session:
        seed(session)
    return env


def test_show_gives_the_profile_enrollments_and_timeline(env: dict[str, str]) -> None:
    ran = cadence(env, "subscribers", "show", "ann@example.com", "--json")
    assert ran.status == 0, ran
    profile = json.loads(ran.out)
    assert (profile["status"], profile["tags"], profile["topics"]) == ("active", ["vip"], ["clinic-news"])
    assert profile["attributes"]["terrain"] == "trails" and profile["consent"] == {"version": "2026-11"}
    assert profile["enrollments"][0]["next_step"] == "adjust-the-load"
    assert profile["enrollments"][0]["next_send_at"] == (T0 + timedelta(days=3)).isoformat()
    timeline = [(t["what"], t["at"]) for t in profile["timeline"]]
    # No "queued" line for an email already sent: its outcome says it (results item 2).
    assert timeline[:3] == [
        ("sent", T0.isoformat()),
        ("open", (T0 + timedelta(hours=1)).isoformat()),
        ("open", (T0 + timedelta(hours=2)).isoformat()),
    ]
    assert next(t["detail"] for t in profile["timeline"] if t["what"] == "click") == LINK_A

    table = cadence(env, "subscribers", "show", "bob@example.com")
    assert table.status == 0 and "hard_bounce" in table.out and "550 5.1.1 no such user" in table.out


def test_search_export_and_tag_through_the_command(env: dict[str, str], tmp_path: Path) -> None:
    found = cadence(env, "subscribers", "search", "example", "--status", "active", "--limit", "1", "--json")
    assert found.status == 0, found
    page = json.loads(found.out)
    assert [s["email"] for s in page["subscribers"]] == ["Ann@Example.com"] and page["next_after"] is not None

    tagged = cadence(env, "subscribers", "tag", "--attr", "terrain=road", "--add", "roads", "--json")
    assert tagged.status == 0, tagged
    assert json.loads(tagged.out) == {"subscribers": 2, "added": 2, "removed": 0, "goals_reached": 0}

    out = tmp_path / "people.csv"
    exported = cadence(env, "subscribers", "export", "--tag", "roads", "--out", str(out))
    assert exported.status == 0 and "2 subscriber(s) written" in exported.err
    assert [r["email"] for r in csv.DictReader(out.open())] == ["bob@example.com", "dee@example.org"]


def test_suppress_unsuppress_erase_and_the_audit_log(env: dict[str, str]) -> None:
    assert cadence(env, "subscribers", "suppress", "cy@example.com", "--reason", "asked by phone").status == 0
    assert "active again" in cadence(env, "subscribers", "unsuppress", "bob@example.com").out
    assert cadence(env, "subscribers", "erase", "dee@example.org", "--yes").status == 0
    refused = cadence(env, "subscribers", "add", "dee@example.org")
    assert refused.status == 1 and "is suppressed" in one_error_line(refused)  # the keyed suppression stays

    audit = cadence(env, "audit", "--json", "--limit", "3")
    entries = json.loads(audit.out)
    assert [e["action"] for e in entries] == ["subscriber.erase", "subscriber.unsuppress", "subscriber.suppress"]
    assert {e["actor"] for e in entries} == {f"cli:{os_user()}"}
    assert entries[2]["detail"]["reason"] == "asked by phone"
    by_address = json.loads(cadence(env, "audit", "--json", "--target", "cy@example.com").out)
    assert [e["action"] for e in by_address] == ["subscriber.suppress"]


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["subscribers", "show", "nobody@example.com"], 1, "no subscriber 'nobody@example.com'"),
        (["subscribers", "erase", "cy@example.com"], 2, "erasing cannot be undone: add --yes"),
        (["subscribers", "suppress", "cy@example.com"], 2, "Missing option '--reason'"),
        (["subscribers", "tag", "cy@example.com"], 2, "give --add TAG or --remove TAG"),
        (["subscribers", "tag", "--add", "x"], 2, "give email addresses or filters"),
        (["subscribers", "search", "--status", "gone"], 1, "--status: 'gone' is not one of"),
        (["subscribers", "export", "--format", "xml"], 2, "--format: 'xml' is not csv or json"),
    ],
)
def test_bad_input_is_one_line_and_the_right_exit_status(
    env: dict[str, str], args: list[str], status: int, message: str
) -> None:
    ran = cadence(env, *args)
    assert ran.status == status and message in one_error_line(ran), ran
