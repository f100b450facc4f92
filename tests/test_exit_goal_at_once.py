"""Exit goals take effect the moment they are met, not when the next step is due (as Customer.io's
conversion goals do): tagging someone ``booked`` through the staff API over HTTP, the installed
`cadence` CLI (``subscribers tag``, ``subscribers add --attr``, ``subscribers import``) ends every
active enrollment whose goal is now met at once, with the clock not advanced, as "goal reached";
a queued step is skipped with the goal reason and never sent (also by a real Celery worker);
`cadence report` and the staff API count the goal once, however many ticks come after.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cadence.clock import FileClock
from cadence.core.campaign import ExitGoal, Rule
from cadence.core.drip_policy import GOAL_REACHED, exit_goal_touched
from cadence.db.models import Delivery, Enrollment, Event, Subscriber
from cadence.db.session import transaction
from tests.support.cluster import ROOT, cadence_env, enrolled_runners, processes
from tests.support.services import postgres_database
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer
from tests.test_cli import cadence

CAMPAIGN = "lower-back-pain"
BOTH = "booked-and-paid"  # the same course, its goal: tag booked AND answer paid (match: all)
TREADMILL = "treadmill-goal"  # the same course, its goal an answer of the signup form
TZ = "America/New_York"


@pytest.mark.parametrize(
    ("goal", "tags", "answers", "touched"),
    [
        (None, ["booked"], True, False),
        (ExitGoal(tags=("booked",)), ["Booked"], False, True),
        (ExitGoal(tags=("booked",)), ["vip"], True, False),  # a tag goal ignores answers
        (ExitGoal(rules=(Rule("paid", "truthy"),)), ["booked"], False, False),
        (ExitGoal(rules=(Rule("paid", "truthy"),)), [], True, True),
        (ExitGoal(tags=("booked",), rules=(Rule("paid", "truthy"),), match="all"), [], True, True),
    ],
)
def test_only_a_change_a_goal_reads_makes_it_worth_a_look(
    goal: ExitGoal | None, tags: list[str], answers: bool, touched: bool
) -> None:
    assert exit_goal_touched(goal, tags_added=tags, answers_changed=answers) is touched


def _campaigns(tmp: Path) -> Path:
    """The repository's campaigns, plus :data:`BOTH`."""
    folder = tmp / "campaigns"
    shutil.copytree(ROOT / "campaigns", folder)
    text = (folder / f"{CAMPAIGN}.yaml").read_text(encoding="utf-8")
    head = text[: text.index("exit_goal:")].replace(f"id: {CAMPAIGN}\n", f"id: {BOTH}\n", 1)
    goal = "exit_goal:\n  tags: [booked]\n  rules:\n    - {attribute: paid, op: truthy}\n  match: all\n"
    (folder / f"{BOTH}.yaml").write_text(head + goal, encoding="utf-8")
    head = text[: text.index("exit_goal:")].replace(f"id: {CAMPAIGN}\n", f"id: {TREADMILL}\n", 1)
    goal = "exit_goal:\n  rules:\n    - {attribute: terrain, op: eq, value: treadmill}\n"
    (folder / f"{TREADMILL}.yaml").write_text(head + goal, encoding="utf-8")
    return folder


@pytest.fixture(params=["sqlite", "postgresql"])
def web(request: pytest.FixtureRequest, tmp_path: Path, web_sink: SmtpSink) -> Iterator[WebServer]:
    extra = {"CADENCE_CAMPAIGNS_DIR": str(_campaigns(tmp_path))}
    web_sink.clear()
    if request.param == "sqlite":
        with WebServer(tmp_path, web_sink, extra_env=extra) as server:
            yield server
        return
    with (
        postgres_database() as url,
        WebServer(tmp_path, web_sink, extra_env={**extra, "CADENCE_DATABASE_URL": url}) as server,
    ):
        yield server


def _path_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CADENCE_")} | {"COLUMNS": "200"}


def cli(web: WebServer, *args: str) -> Any:
    return cadence({**_path_env(), **web.env}, *args)


def token_of(web: WebServer) -> str:
    made = cli(web, "tokens", "add", "booking-system", "--scope", "write", "--json")
    assert made.status == 0, made
    return str(json.loads(made.out)["token"])


def tag(web: WebServer, token: str, *emails: str, add: str = "booked") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", **web.from_ip()}
    done = httpx.post(
        web.url("/api/admin/subscribers/tags"), headers=headers, json={"emails": list(emails), "add": [add]}, timeout=20
    )
    assert done.status_code == 200, done.text
    body: dict[str, Any] = done.json()
    return body


def enrolled(web: WebServer, campaign: str, *emails: str, **attrs: str) -> None:
    """`emails` added with the CLI, enrolled in `campaign`, sent its first lesson."""
    for email in emails:
        extra = [x for k, v in attrs.items() for x in ("--attr", f"{k}={v}")]
        added = cli(web, "subscribers", "add", email, "--tz", TZ, "--attr", "terrain=trails", *extra)
        assert added.status == 0, added
    args = [x for e in emails for x in ("--email", e)]
    assert cli(web, "campaigns", "enroll", campaign, *args).status == 0
    assert web.drive() == len(emails)


def state_of(web: WebServer, email: str, campaign: str = CAMPAIGN) -> dict[str, Any]:
    with transaction(web.settings.database_url) as session:
        person = session.scalar(select(Subscriber).where(Subscriber.email_key == email))
        assert person is not None
        enrollment = session.scalar(
            select(Enrollment).where(Enrollment.subscriber_id == person.id, Enrollment.campaign_id == campaign)
        )
        assert enrollment is not None
        rows = {
            d.step_index: (d.state, d.last_error, d.id)
            for d in session.scalars(select(Delivery).where(Delivery.enrollment_id == enrollment.id))
        }
        events = [
            (e.delivery_id, e.data)
            for e in session.scalars(select(Event).where(Event.kind == "exit_goal", Event.subscriber_id == person.id))
        ]
        return {
            "state": (enrollment.state, enrollment.end_reason),
            "ended_at": enrollment.ended_at,
            "next_send_at": enrollment.next_send_at,
            "rows": rows,
            "events": events,
        }


def goals_in_report(web: WebServer, campaign: str, token: str) -> tuple[int, int, int]:
    """(CLI report total, CLI report at step 1, staff API report total) of "exit goal reached"."""
    ran = cli(web, "report", campaign, "--json")
    assert ran.status == 0, ran
    document = json.loads(ran.out)
    step1 = sum(r["exit_goal_reached"] for r in document["rows"] if r["step"] == 1)
    headers = {"Authorization": f"Bearer {token}", **web.from_ip()}
    api = httpx.get(web.url(f"/api/admin/report/{campaign}"), headers=headers, timeout=20).json()
    return document["total"]["exit_goal_reached"], step1, api["total"]["exit_goal_reached"]


def received_by(web: WebServer, email: str) -> int:
    return sum(1 for m in web.sink.messages if m.rcpt_tos == [email] or tuple(m.rcpt_tos) == (email,))


def test_a_tag_through_the_staff_api_ends_the_drip_at_once_and_is_counted_once(web: WebServer) -> None:
    enrolled(web, CAMPAIGN, "ana@example.com", "ben@example.com")
    token = token_of(web)
    before = web.clock.now()

    told = tag(web, token, "ana@example.com")

    assert (told["added"], told["goals_reached"]) == (1, 1)
    assert web.clock.now() == before  # nothing waited for the next step
    ana = state_of(web, "ana@example.com")
    assert ana["state"] == ("exited", "goal reached") and ana["next_send_at"] is None
    assert ana["ended_at"] == before.astimezone(UTC).replace(tzinfo=ana["ended_at"].tzinfo)
    assert {i: r[:2] for i, r in ana["rows"].items()} == {0: ("sent", ""), 1: ("skipped", GOAL_REACHED)}
    # The event is on the email that converted her, as the send-time check leaves it.
    assert ana["events"] == [(ana["rows"][0][2], {"campaign": CAMPAIGN, "before_step": "hips-first"})]
    assert state_of(web, "ben@example.com")["state"] == ("active", "")
    assert goals_in_report(web, CAMPAIGN, token) == (1, 1, 1)

    # Ticks after the tag neither send to her nor count her again.
    web.sink.clear()
    web.clock.advance(timedelta(days=2))
    assert web.drive() == 1
    assert [tuple(m.rcpt_tos) for m in web.sink.wait_for(1)] == [("ben@example.com",)]
    web.clock.advance(timedelta(days=3))
    web.drive()
    assert received_by(web, "ana@example.com") == 0
    assert goals_in_report(web, CAMPAIGN, token) == (1, 1, 1)
    assert len(state_of(web, "ana@example.com")["events"]) == 1


def test_a_tag_on_someone_with_no_active_drip_is_no_error(web: WebServer) -> None:
    token = token_of(web)
    assert cli(web, "subscribers", "add", "dan@example.com", "--tz", TZ).status == 0  # never enrolled
    enrolled(web, CAMPAIGN, "eve@example.com")
    tag(web, token, "eve@example.com")  # her drip has ended already
    for email in ("dan@example.com", "eve@example.com"):
        assert tag(web, token, email, add="vip")["goals_reached"] == 0
        ran = cli(web, "subscribers", "tag", email, "--add", "booked", "--json")
        assert ran.status == 0 and json.loads(ran.out)["goals_reached"] == 0, ran
    assert len(state_of(web, "eve@example.com")["events"]) == 1


def test_match_all_ends_nothing_until_every_part_is_met(web: WebServer) -> None:
    enrolled(web, BOTH, "fay@example.com")
    token = token_of(web)
    waiting = state_of(web, "fay@example.com", BOTH)

    assert tag(web, token, "fay@example.com")["goals_reached"] == 0  # booked, not paid yet
    assert state_of(web, "fay@example.com", BOTH) == waiting

    # The answer that completes the goal, through the CLI's `subscribers add` (an update).
    ran = cli(web, "subscribers", "add", "fay@example.com", "--attr", "paid=yes")
    assert ran.status == 0, ran
    fay = state_of(web, "fay@example.com", BOTH)
    assert fay["state"] == ("exited", "goal reached") and fay["ended_at"] is not None
    assert goals_in_report(web, BOTH, token) == (1, 1, 1)


def test_an_answer_changed_through_the_preferences_api_ends_the_drip_at_once(web: WebServer) -> None:
    from cadence.core.tokens import make_token

    enrolled(web, TREADMILL, "mo@example.com")
    person = web.subscriber("mo@example.com")
    assert person is not None
    token = make_token(web.settings.secret_key, "preferences", person.id)
    answers = {"terrain": "roads", "training_for_race": False}
    put = httpx.put(web.url(f"/api/preferences/{token}"), json=answers, headers=web.from_ip(), timeout=20)
    assert put.status_code == 200, put.text
    assert state_of(web, "mo@example.com", TREADMILL)["state"] == ("active", "")  # not the goal's answer
    answers["terrain"] = "treadmill"
    put = httpx.put(web.url(f"/api/preferences/{token}"), json=answers, headers=web.from_ip(), timeout=20)
    assert put.status_code == 200, put.text
    mo = state_of(web, "mo@example.com", TREADMILL)
    assert mo["state"] == ("exited", "goal reached") and mo["rows"][1][:2] == ("skipped", GOAL_REACHED)
    assert goals_in_report(web, TREADMILL, token_of(web)) == (1, 1, 1)


@pytest.mark.parametrize("web", ["sqlite"], indirect=True)
def test_the_console_tag_form_ends_the_drip_and_says_so(web: WebServer, browser: Any) -> None:
    from tests.support.console import Console
    from tests.test_console_campaigns import _log_in

    enrolled(web, CAMPAIGN, "liv@example.com")
    person = web.subscriber("liv@example.com")
    assert person is not None
    console = Console(browser, web)
    page = console.page
    try:
        _log_in(console, web, "eda.editor@clinic.example", "editor")
        page.goto(web.url(f"/admin/subscribers/{person.id}"))
        page.get_by_label("Add a tag").fill("booked")
        page.get_by_role("button", name="Add tag").click()
        page.get_by_text("Tag booked added. Exit goal reached: 1 drip(s) ended.").wait_for()
        assert console.csp == [] and console.dialogs == []
    finally:
        console.close()
    assert state_of(web, "liv@example.com")["state"] == ("exited", "goal reached")


def test_the_cli_tag_skips_a_queued_step_which_is_then_never_sent(web: WebServer) -> None:
    enrolled(web, CAMPAIGN, "gus@example.com", "hal@example.com")
    token = token_of(web)
    web.clock.advance(timedelta(days=2))
    from cadence.operations import enrollment as engine

    batches = engine.tick(web.runtime).batches  # lesson 2 queued for both, not sent yet
    assert state_of(web, "gus@example.com")["rows"][1][0] == "queued"

    ran = cli(web, "subscribers", "tag", "gus@example.com", "--add", "booked", "--json")
    assert ran.status == 0 and json.loads(ran.out)["goals_reached"] == 1, ran
    gus = state_of(web, "gus@example.com")
    assert gus["state"] == ("exited", "goal reached")
    assert gus["rows"][1][:2] == ("skipped", GOAL_REACHED)

    web.sink.clear()
    sent = sum(engine.deliver(web.runtime, batch).sent for batch in batches)
    assert sent == 1 and [tuple(m.rcpt_tos) for m in web.sink.wait_for(1)] == [("hal@example.com",)]
    assert state_of(web, "gus@example.com")["rows"][1][:2] == ("skipped", GOAL_REACHED)
    assert goals_in_report(web, CAMPAIGN, token) == (1, 1, 1)


def test_an_import_with_tags_ends_the_drips_it_completes(web: WebServer, tmp_path: Path) -> None:
    enrolled(web, CAMPAIGN, "ida@example.com", "jon@example.com")
    token = token_of(web)
    csv = tmp_path / "bookings.csv"
    csv.write_text("email,tags\nida@example.com,booked\nkim@example.com,booked\n", encoding="utf-8")
    ran = cli(web, "subscribers", "import", str(csv), "--json")
    assert ran.status == 0, ran
    assert json.loads(ran.out)["goals_reached"] == 1
    assert state_of(web, "ida@example.com")["state"] == ("exited", "goal reached")
    assert state_of(web, "jon@example.com")["state"] == ("active", "")
    assert goals_in_report(web, CAMPAIGN, token) == (1, 1, 1)


# --------------------------------------------------------------------------- a real worker


@pytest.mark.slow
def test_a_real_worker_does_not_send_the_step_skipped_by_a_tag(tmp_path: Path, redis_url: str) -> None:
    """Lesson 1 is queued for two runners and its send tasks wait in Redis; one is tagged with
    the CLI before any worker runs; the worker then sends to the other only."""
    start = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window
    with SmtpSink() as sink, postgres_database() as url, processes(tmp_path / "logs") as procs:
        clock = FileClock(tmp_path / "clock")
        clock.set(start)
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=url,
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
        )
        enrolled_runners(env, 2, start, prefix="w")
        ticked = cadence(env, "tick")  # rows queued, tasks in Redis; no worker yet
        assert ticked.status == 0, ticked
        ran = cadence(env, "subscribers", "tag", "w0@example.com", "--add", "booked", "--json")
        assert ran.status == 0 and json.loads(ran.out)["goals_reached"] == 1, ran

        procs.worker(env, concurrency=1)
        sink.wait_for(1, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with transaction(url) as session:
                pending = session.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.state.in_(("queued", "sending")))
                )
            if pending == 0:
                break
            time.sleep(0.1)
        assert pending == 0, procs.logs()
        # Every row is final, so every email the worker sent has reached the sink.
        assert [tuple(m.rcpt_tos) for m in sink.messages] == [("w1@example.com",)], procs.logs()
        with transaction(url) as session:
            rows = {
                email: (state, error)
                for email, state, error in session.execute(
                    select(Subscriber.email, Delivery.state, Delivery.last_error).join(
                        Delivery, Delivery.subscriber_id == Subscriber.id
                    )
                )
            }
            ended = session.scalar(
                select(Enrollment.end_reason).join(Subscriber).where(Subscriber.email == "w0@example.com")
            )
        assert rows == {"w0@example.com": ("skipped", GOAL_REACHED), "w1@example.com": ("sent", "")}
        assert ended == "goal reached"
        report = json.loads(cadence(env, "report", CAMPAIGN, "--json").out)
        assert report["total"]["exit_goal_reached"] == 1 and report["total"]["sent"] == 1
