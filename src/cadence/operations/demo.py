"""`cadence demo`: the lower-back-pain drip for ~30 fictional runners, end to end, in seconds.

It starts a real Celery worker process and the real scheduler (Celery beat), and moves a
simulated clock (a ``file:`` clock every process reads) forward through two weeks. Time moves
in half-hour steps, paced at ``speed`` simulated seconds per real second, and waits whenever
work is due, so a slow machine sends at the same simulated minute as a fast one: every email
goes out inside its send window, in the subscriber's time zone, exactly as in production.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cadence.clock import FileClock, wall_now
from cadence.config import Settings, load_settings, process_environment
from cadence.core.subscriber_csv import parse_subscriber_csv
from cadence.core.subscriber_fields import email_hash, email_key
from cadence.core.suppression_keys import SuppressionKeys
from cadence.db import demo as demo_store
from cadence.db import suppressions
from cadence.db.migrate import upgrade
from cadence.db.session import engine_for, sqlite_file, transaction
from cadence.errors import InputError, UsageError
from cadence.files.catalog import CampaignCatalog
from cadence.operations.campaign_progress import campaign_counts, status_table, step_totals
from cadence.operations.enrollment import enroll
from cadence.operations.simulation import ClockDriver
from cadence.operations.simulation import Progress as SimProgress
from cadence.operations.subscribers import import_subscribers

CAMPAIGN = "lower-back-pain"
STEP = timedelta(minutes=30)
TIMEOUT_REAL_SECONDS = 240


def _start_of_next_monday(now: datetime) -> datetime:
    days = (7 - now.weekday()) % 7 or 7
    return (now + timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


def sqlite_file_in_data_dir(settings: Settings) -> Path | None:
    """The SQLite database file, if the database is one and lives inside the data directory
    (the default): the only database ``--fresh`` may delete."""
    path = sqlite_file(settings.database_url)
    return path if path is not None and path.is_relative_to(settings.data_dir.resolve()) else None


def _prepare(settings: Settings, fresh: bool, force: bool = False) -> list[str]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database_file = sqlite_file_in_data_dir(settings)
    text = resources.files("cadence.demo_data").joinpath("runners.csv").read_text(encoding="utf-8")
    rows = parse_subscriber_csv(text, "demo runners.csv")
    keys = [email_key(r.email) for r in rows]
    if fresh and database_file is not None and database_file.exists() and not force:
        # The default data dir serves real work too: never delete someone's subscribers to make
        # room for fictional runners without being told to (a marketer's trial, issue 13).
        others = demo_store.count_others(settings.database_url, keys)
        if others:
            raise InputError(
                f"{database_file} holds {others} subscriber(s) who are not demo runners, and the demo "
                "starts from an empty database: run it with another CADENCE_DATA_DIR, or add --force "
                "to delete them"
            )
    if fresh:
        for sub in ("outbox", "broker"):
            shutil.rmtree(settings.data_dir / sub, ignore_errors=True)
        (settings.data_dir / "celerybeat-schedule").unlink(missing_ok=True)
        if database_file is not None:  # a clean database too, as the outbox is (issue 13)
            engine_for(settings.database_url).dispose()
            for suffix in ("", "-wal", "-shm", "-journal"):
                database_file.with_name(database_file.name + suffix).unlink(missing_ok=True)
    upgrade(settings.database_url)
    if fresh and database_file is None:
        # A database outside the data dir (PostgreSQL, or a SQLite file elsewhere) may hold real
        # data: remove only the demo's own fictional runners (their enrollments and deliveries
        # go with them, ON DELETE CASCADE) and their suppressions.
        with transaction(settings.database_url) as session:
            demo_store.delete_runners(session, keys)
            suppressions.delete_for(session, [email_hash(k) for k in keys])
    return [r.email for r in rows]


def _children(settings: Settings, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    log = open(settings.data_dir / "demo-processes.log", "ab")  # noqa: SIM115 (kept open for the children)
    cmd = [sys.executable, "-m", "cadence"]
    return [
        subprocess.Popen(
            [*cmd, "worker", "--concurrency", "2", "--loglevel", "WARNING"], env=env, stdout=log, stderr=log
        ),
        subprocess.Popen([*cmd, "scheduler", "--loglevel", "WARNING"], env=env, stdout=log, stderr=log),
    ]


def run_demo(
    console: Console,
    *,
    speed: float = 86400.0,
    fresh: bool = True,
    force: bool = False,
    env: dict[str, str] | None = None,
) -> int:
    """Run the demo; returns the number of emails sent. With `fresh` (the default) it starts from
    an empty database, and refuses to delete subscribers who are not demo runners unless `force`."""
    if not speed > 0:
        raise UsageError(f"--speed: must be a positive number of simulated seconds per second, got {speed:g}")
    base_env = process_environment() if env is None else dict(env)
    settings = load_settings(base_env)
    clock = FileClock(settings.data_dir / "demo-clock")
    start = _start_of_next_monday(wall_now())  # the demo's two weeks start from today
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    clock.set(start)
    child_env = {
        **base_env,
        "CADENCE_DATA_DIR": str(settings.data_dir),
        "CADENCE_CAMPAIGNS_DIR": str(settings.campaigns_dir),
        "CADENCE_TEMPLATES_DIR": str(settings.templates_dir),
        "CADENCE_CLOCK": str(clock),
        "CADENCE_TICK_SECONDS": "0.1",
        "PYTHONUNBUFFERED": "1",
    }
    settings = replace(settings, clock_spec=str(clock))
    emails = _prepare(settings, fresh, force)
    campaign = CampaignCatalog(settings.campaigns_dir, settings.templates_dir).get(CAMPAIGN)
    with transaction(settings.database_url) as session:
        result = import_subscribers(
            session,
            parse_subscriber_csv(
                resources.files("cadence.demo_data").joinpath("runners.csv").read_text(encoding="utf-8"), "runners.csv"
            ),
            start,
            keys=SuppressionKeys.from_settings(settings),
        )
        people = demo_store.runners(session, [email_key(e) for e in emails])
        enrolled = enroll(session, campaign, people, start)
    ids = [p.id for p in people]
    total = enrolled.enrolled * len(campaign.steps)
    console.print(
        f"[bold]Cadence demo[/bold]: {result.created} runners imported, {enrolled.enrolled} enrolled in "
        f"[cyan]{campaign.name}[/cyan] ({len(campaign.steps)} emails each). "
        f"Database: {settings.database_url.split('://')[0]}, "
        f"broker: {settings.broker_url.split('://')[0]}, email: {settings.email_url.split('://')[0]}"
    )
    processes = _children(settings, child_env)
    driver = ClockDriver(settings, clock, ids)
    try:
        with Progress(
            TextColumn("[bold blue]{task.fields[sim]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("emails sent"),
            console=console,
        ) as progress:
            bar = progress.add_task("send", total=total, sim=start.strftime("%a %d %b %H:%M UTC"))

            def show(state: SimProgress) -> None:
                progress.update(bar, completed=state.sent, sim=state.now.strftime("%a %d %b %H:%M UTC"))

            final = driver.run(
                step=STEP,
                real_step=STEP.total_seconds() / speed,
                timeout=TIMEOUT_REAL_SECONDS,
                processes=processes,
                on_progress=show,
            )
    finally:
        for proc in processes:
            proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    with transaction(settings.database_url) as session:
        counts = campaign_counts(session, campaign, clock.now())
        totals = step_totals(session, campaign, clock.now())
    console.print(status_table(campaign, counts, totals))
    sent = final.sent
    if settings.email_url.startswith("outbox"):
        console.print(f"[green]{sent} emails[/green] are in [bold]{settings.outbox_dir}[/bold] (open any .eml file)")
    else:
        console.print(f"[green]{sent} emails[/green] sent through {settings.email_url.split('://')[0]}")
    _console_link(console, settings, clock)
    return sent


DEMO_ADMIN = "demo-admin@example.com"


def _console_link(console: Console, settings: Settings, clock: FileClock) -> None:
    """The last lines: how to see this run in the staff console (issue 14), with a one-time link
    for a demo admin. On the demo's clock, so the dashboard's last 30 days are the demo's and
    the link is valid for the `cadence web` started with that clock."""
    from cadence.operations.staff_accounts import add_user, reset_user

    try:
        with transaction(settings.database_url) as session:
            link = add_user(session, DEMO_ADMIN, "admin", actor="cli:demo", now=clock.now())
    except InputError:  # a demo run before made it: a new link
        with transaction(settings.database_url) as session:
            link = reset_user(session, DEMO_ADMIN, actor="cli:demo", now=clock.now())
    console.print("See it in the staff console: run")
    console.print(f"  CADENCE_CLOCK={clock} cadence web", soft_wrap=True, highlight=False, markup=False)
    console.print(f"and open this one-time link to choose a password for {DEMO_ADMIN}:")
    console.print(f"  {link.url(settings.base_url)}", soft_wrap=True, highlight=False, markup=False)
