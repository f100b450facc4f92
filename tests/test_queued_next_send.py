"""The Paris subscriber who "stayed queued with no next send time" (issue 13 trial): once the
tick hands a step to the workers, the enrollment's own next send time is empty by design (no
second tick may claim it). A step sent more than the grace after its window (a backlog) waits
for the next window as a queued delivery; `cadence subscribers show` now says when that is,
instead of "-". The step then goes out at that time. Installed command, SQLite, SMTP sink."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.operations import enrollment as engine
from cadence.operations.runtime import Runtime
from tests.support.cluster import cadence_env
from tests.support.smtpd import SmtpSink
from tests.test_cli import cadence

PARIS = ZoneInfo("Europe/Paris")
ADDRESS = "paris@example.com"
# Monday 7 December 2026, 07:30 in Paris (06:30 UTC): inside the course's 07:00-09:00 window.
START = datetime(2026, 12, 7, 6, 30, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[dict[str, str], Runtime, FileClock, SmtpSink]]:
    with SmtpSink() as sink:
        clock = FileClock(tmp_path / "clock")
        clock.set(START)
        env = cadence_env(
            tmp_path / "data",
            CADENCE_CLOCK=f"file:{tmp_path / 'clock'}",
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            COLUMNS="200",
        )
        assert cadence(env, "db", "upgrade").status == 0
        added = cadence(env, "subscribers", "add", ADDRESS, "--tz", "Europe/Paris", "--attr", "terrain=trails")
        assert added.status == 0, added
        assert cadence(env, "campaigns", "enroll", "lower-back-pain", "--all").status == 0
        runtime = Runtime.from_settings(load_settings(env))
        try:
            yield env, runtime, clock, sink
        finally:
            runtime.close()


def enrollment(env: dict[str, str]) -> dict[str, str | None]:
    shown = cadence(env, "subscribers", "show", ADDRESS, "--json")
    assert shown.status == 0, shown
    [course] = json.loads(shown.out)["enrollments"]
    return dict(course)


def test_a_step_waiting_for_its_window_shows_when_it_goes_out(
    world: tuple[dict[str, str], Runtime, FileClock, SmtpSink],
) -> None:
    env, runtime, clock, sink = world
    batches = engine.tick(runtime).batches  # lesson 1 is due: handed to the workers
    waiting = enrollment(env)
    assert waiting["state"] == "active" and waiting["next_send_at"] == START.isoformat()
    # The workers were busy: they get to it at 10:30 Paris, past the window and its hour of grace.
    clock.advance(timedelta(hours=3))
    for batch in batches:
        assert engine.deliver(runtime, batch).postponed == 1
    postponed = enrollment(env)
    next_window = datetime(2026, 12, 8, 7, 0, tzinfo=PARIS)  # Tuesday 07:00 Paris
    assert postponed["next_step"] == "why-it-hurts"
    assert postponed["next_send_at"] == next_window.astimezone(UTC).isoformat()
    table = " ".join(cadence(env, "subscribers", "show", ADDRESS).out.split())
    assert "2026-12-08 06:00 UTC" in table  # not "-"
    # And it does go out then.
    clock.set(next_window.astimezone(UTC))
    sent = sum(engine.deliver(runtime, batch).sent for batch in engine.tick(runtime).batches)
    assert sent == 1 and sink.wait_for(1)[0].rcpt_tos == (ADDRESS,)
    after = enrollment(env)
    assert after["next_step"] == "hips-first" and after["next_send_at"] is not None


def test_a_paused_subscribers_queued_step_shows_when_the_send_path_will_send_it(
    world: tuple[dict[str, str], Runtime, FileClock, SmtpSink],
) -> None:
    """The timeline's "scheduled for" (results item 3) must say what the send path will do: a
    subscriber who paused their emails after the tick queued a step gets it at the first window
    after the pause (drip_policy.postpone_until), not at its due time. Before, the timeline said
    "for 2026-12-07 07:30 Europe/Paris" (the due time) for an email that waited two weeks."""
    from cadence.db.models import Subscriber
    from cadence.db.session import transaction
    from cadence.operations.preferences import pause

    env, runtime, clock, _ = world
    batches = engine.tick(runtime).batches  # lesson 1 queued for now
    with transaction(runtime.settings.database_url) as session:
        person = session.query(Subscriber).filter_by(email=ADDRESS).one()
        until = pause(session, person, 2, clock.now(), how="preferences page")
    assert until == START + timedelta(weeks=2)

    def lesson() -> dict[str, str]:
        shown = cadence(env, "subscribers", "show", ADDRESS, "--json")
        assert shown.status == 0, shown
        entry: dict[str, str] = next(t for t in json.loads(shown.out)["timeline"] if t["step"] == "why-it-hurts")
        return entry

    before = lesson()
    for batch in batches:  # the send path's verdict
        assert engine.deliver(runtime, batch).postponed == 1
    after = lesson()
    goes = datetime(2026, 12, 21, 7, 30, tzinfo=PARIS)  # the pause's end, inside the 07:00-09:00 window
    assert after == {**after, "what": "scheduled", "at": goes.astimezone(UTC).isoformat()}, after
    assert before == after, (before, after)
    assert after["detail"] == "for 2026-12-21 07:30 Europe/Paris"
