"""`cadence report`: results per step × segment from the ledger and the event rollups, on real
SQLite and PostgreSQL, and through the installed command."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import select, update

from cadence.config import load_settings
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Event
from cadence.db.session import transaction
from cadence.errors import InputError, NotFound
from cadence.files.catalog import CampaignCatalog
from cadence.operations.results import (
    CSV_COLUMNS,
    DAILY_CSV_COLUMNS,
    OPENS_CAVEAT,
    ResultRow,
    campaign_results,
    catch_up,
)
from tests.support.cluster import ROOT, cadence_env
from tests.support.staff import CAMPAIGN, LINK_A, LINK_B, T0, seed
from tests.test_cli import cadence, one_error_line

LBP = CampaignCatalog(ROOT / "campaigns", ROOT / "templates").get(CAMPAIGN)


def cell(rows: list[ResultRow], step: int, segment: str) -> ResultRow:
    return next(r for r in rows if (r.step, r.segment) == (step, segment))


def test_the_report_counts_each_step_and_segment_once_per_delivery(database_url: str) -> None:
    upgrade(database_url)
    with transaction(database_url) as session:
        seed(session)
    with transaction(database_url) as session:
        live = campaign_results(session, CAMPAIGN, LBP, T0, daily=True)  # nothing folded yet: all counted live
    folded = catch_up(partial(transaction, database_url), lag=timedelta(0))
    assert folded == 8 + 5  # events and deliveries
    with transaction(database_url) as session:
        report = campaign_results(session, CAMPAIGN, LBP, T0, folded=folded, daily=True)
    assert report.rows == live.rows and report.top_links == live.top_links
    # The per-day series: the same from the rollups as live, and it adds up to the totals.
    assert report.daily == live.daily and report.daily
    assert sum(d.sent for d in report.daily) == report.total.sent
    assert sum(d.opens for d in report.daily) == report.total.unique_opens
    assert sum(d.clicks for d in report.daily) == report.total.unique_clicks
    assert sum(d.unsubscribes for d in report.daily) == report.total.unsubscribes
    assert sum(d.bounces for d in report.daily) == report.total.hard_bounces + report.total.soft_bounces
    assert report.kind == "drip" and "daily" not in replace(live, daily=None).document()

    trail = cell(report.rows, 1, "trail+no-race")
    assert (trail.sent, trail.delivered, trail.unique_opens, trail.open_rate) == (1, 1, 1, 1.0)  # two opens, one person
    assert (trail.unique_clicks, trail.clicks, trail.click_rate, trail.step_id) == (1, 2, 1.0, "why-it-hurts")
    everyday = cell(report.rows, 1, "everyday+no-race")
    assert (everyday.sent, everyday.hard_bounces, everyday.delivered) == (2, 1, 1)
    assert (everyday.unsubscribes, everyday.complaints, everyday.unique_opens, everyday.open_rate) == (1, 1, 0, 0.0)
    before_segment = cell(report.rows, 1, "")  # refused before a segment was chosen: still counted
    assert (before_segment.failed, before_segment.sent, before_segment.open_rate) == (1, 0, None)
    assert before_segment.segment_label == "not sent: 1 failed"  # never a blank segment (results item 1)
    assert cell(report.rows, 2, "trail+no-race").unique_opens == 1
    assert (report.total.sent, report.total.failed, report.total.unique_opens) == (4, 1, 2)
    assert sorted(report.top_links) == sorted([(LINK_A, 1), (LINK_B, 1)])
    assert report.failures == []  # why they failed: only when asked (it reads every failed row)
    with transaction(database_url) as session:
        why = campaign_results(session, CAMPAIGN, LBP, T0, reasons=True)
    assert why.failures == [(1, "550 5.7.1 <address>: rejected", 1)]
    assert report.opens_caveat == OPENS_CAVEAT and "Apple Mail Privacy Protection" in OPENS_CAVEAT

    # Folding again reads nothing and changes nothing; a new event is counted once, live and
    # folded; a delivery still queued when folded is counted at its state until it is final.
    assert catch_up(partial(transaction, database_url), lag=timedelta(0)) == 0
    with transaction(database_url) as session:
        bounced = session.scalar(select(Event.delivery_id).where(Event.kind == "hard_bounce"))
        session.add(Event(subscriber_id=None, delivery_id=bounced, kind="open", data={}, created_at=T0))
        ann = session.scalar(select(Delivery).where(Delivery.step_index == 1))
        assert ann is not None
        queued = Delivery(
            enrollment_id=ann.enrollment_id,
            subscriber_id=ann.subscriber_id,
            campaign_id=CAMPAIGN,
            step_id="x",
            step_index=2,
            segment_id="",
            state="queued",
            attempts=0,
            due_at=T0,
            not_before=T0,
            message_id="",
            content_hash="",
            last_error="",
            created_at=T0,
        )
        session.add(queued)
    for _ in range(2):
        with transaction(database_url) as session:
            again = campaign_results(session, CAMPAIGN, LBP, T0)
        assert cell(again.rows, 1, "everyday+no-race").unique_opens == 1
        assert cell(again.rows, 1, "trail+no-race") == trail
        assert cell(again.rows, 3, "").queued == 1
        assert catch_up(partial(transaction, database_url), lag=timedelta(0)) in (2, 0)
    with transaction(database_url) as session:
        session.execute(
            update(Delivery).where(Delivery.step_index == 2).values(state="sent", sent_at=T0, segment_id="s")
        )
    catch_up(partial(transaction, database_url), lag=timedelta(0))
    with transaction(database_url) as session:
        final = campaign_results(session, CAMPAIGN, LBP, T0)
    assert (cell(final.rows, 3, "s").sent, final.total.queued, final.total.sent) == (1, 0, 5)

    # A period: the 9 December click only; sends of 7 December are outside it.
    with transaction(database_url) as session:
        later = campaign_results(session, CAMPAIGN, LBP, T0, since=date(2026, 12, 9), until=date(2026, 12, 9))
    assert later.total.sent == 0 and later.total.failed == 0 and later.top_links == [(LINK_B, 1)]
    assert later.total.clicks == 1
    with transaction(database_url) as session, pytest.raises(InputError, match="--since must not be after"):
        campaign_results(session, CAMPAIGN, LBP, T0, since=date(2026, 12, 9), until=date(2026, 12, 8))
    with transaction(database_url) as session, pytest.raises(NotFound, match="no campaign or newsletter 'nosuch'"):
        campaign_results(session, "nosuch", None, T0)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "clock").write_text((T0 + timedelta(days=3)).isoformat())
    env = cadence_env(tmp / "data", CADENCE_CLOCK=f"file:{tmp / 'clock'}", COLUMNS="220")
    url = load_settings(env).database_url
    upgrade(url)
    with transaction(url) as session:
        seed(session)
    return env


def test_cadence_report_prints_the_table_the_caveat_and_the_links(env: dict[str, str]) -> None:
    ran = cadence(env, "report", CAMPAIGN, "--reasons")
    assert ran.status == 0, ran
    assert "1. why-it-hurts" in ran.out and "trail+no-race" in ran.out and "not sent: 1 failed" in ran.out
    assert "Apple Mail Privacy Protection" in ran.out
    assert LINK_A in ran.out and "Why emails failed" in ran.out


def test_cadence_report_json_is_for_scripts(env: dict[str, str]) -> None:
    ran = cadence(env, "report", CAMPAIGN, "--json", "--since", "2026-12-07")
    assert ran.status == 0, ran
    document = json.loads(ran.out)
    assert document["campaign"] == CAMPAIGN and document["since"] == "2026-12-07"
    assert document["total"]["sent"] == 4 and document["total"]["unique_opens"] == 2
    assert {link["url"] for link in document["top_links"]} == {LINK_A, LINK_B}
    assert sum(d["sent"] for d in document["daily"]) == 4 and all(d["day"] >= "2026-12-07" for d in document["daily"])


def test_cadence_report_csv_and_daily(env: dict[str, str], tmp_path: Path) -> None:
    ran = cadence(env, "report", CAMPAIGN, "--csv")
    assert ran.status == 0, ran
    rows = list(csv.DictReader(io.StringIO(ran.out)))
    assert list(rows[0]) == list(CSV_COLUMNS)  # stable column names, for spreadsheets and scripts
    trail = next(r for r in rows if (r["step"], r["segment"]) == ("1", "trail+no-race"))
    assert (trail["step_id"], trail["sent"], trail["unique_opens"], trail["open_rate"]) == (
        "why-it-hurts",
        "1",
        "1",
        "1.0",
    )
    assert next(r for r in rows if r["segment"] == "")["open_rate"] == ""  # nothing delivered: no rate
    assert sum(int(r["sent"]) for r in rows) == 4

    saved = tmp_path / "days.csv"
    ran = cadence(env, "report", CAMPAIGN, "--csv", "--daily", "--out", str(saved))
    assert ran.status == 0 and "saved in" in ran.out, ran
    days = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert list(days[0]) == list(DAILY_CSV_COLUMNS) and sum(int(d["sent"]) for d in days) == 4
    table = cadence(env, "report", CAMPAIGN, "--daily")
    assert table.status == 0 and "Day by day" in table.out and days[0]["day"] in table.out
    for args, status, message in (
        (["--out", str(saved)], 2, "--out saves the spreadsheet: add --csv"),
        (["--csv", "--out", str(tmp_path / "no" / "such" / "x.csv")], 1, "--out: cannot write"),
    ):
        refused = cadence(env, "report", CAMPAIGN, *args)
        assert refused.status == status and message in one_error_line(refused), refused


def test_cadence_report_of_a_newsletter_is_per_segment(env: dict[str, str]) -> None:
    news = "clinic-news-2027-01"
    assert cadence(env, "report", news).status == 1  # a draft: nothing to report yet
    assert cadence(env, "newsletters", "schedule", news).status == 0
    ran = cadence(env, "report", news, "--json")
    assert ran.status == 0, ran
    document = json.loads(ran.out)
    assert document["kind"] == "newsletter" and document["total"]["queued"] == 1  # Ann asked for clinic news
    assert [(r["step_id"], r["queued"]) for r in document["rows"]] == [(news, 1)] and document["rows"][0]["segment"]
    assert sum(d["sent"] for d in document["daily"]) == 0


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["report", "nosuch"], 1, "no campaign or newsletter 'nosuch'"),
        (["report", CAMPAIGN, "--since", "yesterday"], 1, "--since: 'yesterday' is not a date (YYYY-MM-DD)"),
        (["report"], 2, "give the name of a campaign (lower-back-pain) or of a newsletter"),
    ],
)
def test_cadence_report_refuses_bad_input_in_one_line(
    env: dict[str, str], args: list[str], status: int, message: str
) -> None:
    ran = cadence(env, *args)
    assert ran.status == status and message in one_error_line(ran)


def test_the_results_index_and_rollups_are_in_the_schema(database_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from cadence.db.migrate import alembic_config
    from cadence.db.session import engine_for

    upgrade(database_url)
    names = {ix["name"] for ix in inspect(engine_for(database_url)).get_indexes("deliveries")}
    assert "ix_deliveries_failed" in names
    config = alembic_config()
    with engine_for(database_url).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    assert "api_tokens" not in inspect(engine_for(database_url)).get_table_names()
    upgrade(database_url)
    assert {"api_tokens", "result_rollups", "link_rollups"} <= set(inspect(engine_for(database_url)).get_table_names())
