"""The ``cadence`` command for staff: database, subscribers, campaigns, worker, scheduler, demo.

Every command is a thin shell over the plain functions in engine/subscribers. How the command
ends (exit status 0, 1 for an error, 2 for a usage error; one line on stderr, never a traceback
unless ``--debug``) is decided in one place for every command: :mod:`cadence.cli.failure`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from cadence.cli.importing import subscribers_import
from cadence.cli.options import parse_attrs
from cadence.config import get_settings
from cadence.errors import InputError, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from cadence.operations.enrollment import TickResult

app = typer.Typer(help="Cadence: email newsletters and drip campaigns.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
subscribers_app = typer.Typer(
    help="Add, import, find, export, tag, suppress and erase subscribers.", no_args_is_help=True
)
campaigns_app = typer.Typer(help="Validate, preview, enroll and follow campaigns.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(campaigns_app, name="campaigns")
console = Console()


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"cadence {version('cadence')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error")] = False,
) -> None:
    from cadence.cli.failure import set_debug

    set_debug(debug)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema (Alembic)."""
    from cadence.db.migrate import schema_revisions, upgrade
    from cadence.db.session import display_url

    settings = get_settings()
    before = schema_revisions(settings.database_url)[0]
    upgrade(settings.database_url)
    after = ", ".join(sorted(schema_revisions(settings.database_url)[0]))
    where = display_url(settings.database_url)
    # Say what happened: "up to date" after creating every table read as "nothing was done".
    if not before:
        console.print(f"[green]Created the database at revision {after}[/green] ({where})")
    elif before != set(after.split(", ")):
        was = ", ".join(sorted(before))
        console.print(f"[green]Migrated the database from revision {was} to {after}[/green] ({where})")
    else:
        console.print(f"[green]Database is up to date at revision {after}[/green] ({where})")


@subscribers_app.command("add")
def subscribers_add(
    email: str,
    name: Annotated[str, typer.Option("--name", help="First name")] = "",
    attr: Annotated[list[str] | None, typer.Option("--attr", help="key=value, repeatable")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone, e.g. America/New_York")] = None,
) -> None:
    """Add (or update) one subscriber; staff-added subscribers are active at once."""
    from cadence.core.subscriber_fields import SubscriberInput, check_text, check_timezone
    from cadence.core.suppression_keys import SuppressionKeys
    from cadence.db.session import transaction
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.exit_goals import goal_campaigns
    from cadence.operations.subscribers import upsert_subscriber

    settings = get_settings()
    data = SubscriberInput(email, check_text(name, "--name"), check_timezone(tz, "--tz"), parse_attrs(attr or []))
    keys = SuppressionKeys.from_settings(settings)  # erased addresses are refused too
    with transaction(settings.database_url) as session:
        goals = goal_campaigns(CampaignCatalog(settings.campaigns_dir, settings.templates_dir))
        subscriber = upsert_subscriber(session, data, settings.clock().now(), keys=keys, goals=goals)
    if subscriber is None:
        raise InputError(f"{email} is suppressed (it bounced, complained or was erased): not added")
    console.print(f"[green]Subscriber {subscriber.email} (id {subscriber.id}) saved[/green]")


subscribers_app.command("import")(subscribers_import)


@campaigns_app.command("enroll")
def campaigns_enroll(
    name: str,
    all_: Annotated[bool, typer.Option("--all", help="Every active subscriber")] = False,
    segment: Annotated[
        str | None, typer.Option("--segment", help="Subscribers in this segment now (its id or its name)")
    ] = None,
    email: Annotated[list[str] | None, typer.Option("--email", help="One subscriber, repeatable")] = None,
) -> None:
    """Enroll subscribers in a drip campaign (already enrolled ones are left alone)."""
    from cadence.cli.subscriber_tools import actor as staff_actor
    from cadence.db.session import transaction
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.drip import enroll_chosen
    from cadence.operations.lifecycle import check_open_for_enrollment
    from cadence.operations.test_sends import resolve_segment

    if sum([all_, segment is not None, bool(email)]) != 1:  # a usage error before any lookup
        raise UsageError("give exactly one of --all, --segment S or --email E")
    settings = get_settings()
    campaign = CampaignCatalog(settings.campaigns_dir, settings.templates_dir).get(name)
    if segment is not None:
        # An id or the name validate and status show; NotFound lists the valid ones.
        segment = resolve_segment(campaign, segment).id
    now = settings.clock().now()  # one instant for the segment test and the enrollment
    with transaction(settings.database_url) as session:
        check_open_for_enrollment(session, campaign.id)
        result = enroll_chosen(
            session, campaign, now, everyone=all_, segment=segment, emails=email or (), actor=staff_actor()
        )
    console.print(
        f"[green]{result.enrolled} enrolled[/green], {result.resumed} resumed, {result.already} already enrolled, "
        f"{result.not_active} not active"
    )


@campaigns_app.command("status")
def campaigns_status(
    name: str,
    reasons: Annotated[bool, typer.Option("--reasons", help="Also why deliveries failed or were skipped")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """How far a campaign has got: its state, how many people are in it and waiting for their
    next email (and when it goes out), and per email: due, queued, sent, failed and skipped,
    then the same by segment. Exit status 1 if the campaign is held because its file is
    missing or broken (its emails wait; nothing is failed or cancelled)."""
    import json

    from cadence.operations.drip import campaign_status

    report = campaign_status(get_settings(), name, reasons=reasons)
    if as_json:
        typer.echo(json.dumps(report.document(), indent=2))
    else:
        console.print(report.headline, markup=False, highlight=False)
        console.print(report.table())
        by_segment = report.segments_table()
        if by_segment is not None:
            console.print(by_segment)
        if reasons:
            console.print(report.reasons_table())
    if report.held:
        from cadence.cli.failure import _say

        _say(f"{report.campaign_id} is held: {report.held}; its emails wait until the file is back")
        raise typer.Exit(1)


@app.command()
def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            help="How many groups of emails this process sends at once: while one group waits for the mail"
            " server or the database, the next is being prepared",
        ),
    ] = 4,
    pool: Annotated[
        str | None,
        typer.Option(
            help="How those groups run: threads (all in this one process; the default), solo (one group at"
            " a time; the default with --concurrency 1) or prefork (a separate process for each group; more"
            " memory)"
        ),
    ] = None,
    loglevel: Annotated[
        str, typer.Option(help="How much it writes to its log: DEBUG, INFO, WARNING or ERROR")
    ] = "INFO",
) -> None:
    """Start sending: this process sends the emails whose time has come, four groups at once,
    and keeps running until you stop it (run it as a service). Start one or two on each
    machine: they share the work, and stopping one loses nothing, another picks its emails up."""
    # Plain words on purpose (issue 13 item 7): --help is read by the people who start it, not
    # by Celery users; how it works is in docs/architecture.md and the comments below.
    from cadence.monitoring.metrics import start_process_metrics

    chosen = pool or ("solo" if concurrency == 1 else "threads")
    if chosen not in ("solo", "prefork", "threads"):
        raise UsageError(f"--pool {chosen!r}: expected solo, prefork or threads")
    if chosen == "solo" and concurrency != 1:
        raise UsageError("--pool solo sends one batch at a time: drop --concurrency, or use --pool prefork or threads")
    start_process_metrics("worker", get_settings())  # before the pool forks; docs/operations.md
    from cadence.tasks import process_app

    celery_app = process_app()

    quiet = ["--quiet"] if get_settings().log_format == "json" else []  # no banner among JSON lines
    # threads and solo (issue 15): the process that takes tasks from the broker runs them. The
    # prefork pool adds a parent process of ~100 MB per worker that only hands tasks over a pipe,
    # and a process per batch. The batches mostly wait (for the relay, PostgreSQL, a CPU), so
    # threads overlap them in one process: on the 2-core bench machine one process with 4 threads
    # sent more than 2 processes, in 165 MB (docs/performance.md). acks_late, prefetch 1 and the
    # ledger's leases work the same in every pool (cadence.tasks); each thread has its own
    # runtime and SMTP connection (tasks.runtime).
    options = [f"--pool={chosen}", f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    if chosen != "solo":
        options.append(f"--concurrency={concurrency}")
    celery_app.worker_main([*quiet, "worker", *options])


@app.command()
def scheduler(
    loglevel: Annotated[
        str, typer.Option(help="How much it writes to its log: DEBUG, INFO, WARNING or ERROR")
    ] = "INFO",
) -> None:
    """Start the clock of the whole system: every 30 seconds (CADENCE_TICK_SECONDS) it looks for
    emails whose time has come and hands them to the workers. Run exactly one and keep it
    running; a second one started by mistake does no harm: nothing is ever sent twice."""
    # Celery beat queueing the tick task; the tick takes an advisory lock and the ledger is
    # unique per (enrollment, step), which is why a second scheduler cannot double-send.
    from cadence.tasks import process_app

    settings = get_settings()
    celery_app = process_app()
    # The schedule lives in memory, not in beat's default shelve file: what is due is in the
    # database (next_send_at), so the file only remembered when the last tick was queued, and two
    # schedulers sharing a data directory crashed racing on it (FileNotFoundError on
    # celerybeat-schedule.dir, issue #9). A restarted scheduler queues its first tick one
    # interval after it starts, which is all a tick needs.
    celery_app.Beat(
        loglevel=loglevel,
        scheduler="celery.beat:Scheduler",
        max_interval=settings.tick_seconds,
        quiet=settings.log_format == "json",  # no banner among JSON lines
    ).run()


@app.command()
def tick() -> None:
    """Send what is due now: hand every email whose time has come to the workers, once (for
    cron, or to see what is due). The scheduler does this by itself every few seconds."""
    from cadence.operations import drip
    from cadence.operations.runtime import Runtime
    from cadence.tasks import enqueue_send, process_app

    runtime = Runtime.from_settings(get_settings())
    celery_app = process_app()
    now = runtime.clock.now()
    later: list[datetime] = []

    def hand_out(ids: list[int]) -> None:
        # Read before the send task exists, so no worker has requeued them yet.
        later.extend(drip.postponed_until(runtime, ids, now))
        enqueue_send(celery_app, ids)

    result = drip.tick(runtime, now=now, enqueue=hand_out)
    for line in tick_summary(result, later):
        console.print(line, markup=False, highlight=False)


def tick_summary(result: TickResult, later: Sequence[datetime] = ()) -> list[str]:
    """What a tick did, in a marketer's words. `later`: when the emails it handed out that the
    workers will postpone go out (operations/delivery.postponed_until)."""
    if result.locked_out:
        return ["Another scheduler is handing out emails right now; nothing was done here."]
    lines = []
    now_count = result.enqueued - len(later)
    batches = f"{len(result.batches)} batch" + ("es" if len(result.batches) != 1 else "")
    if result.enqueued and not later:
        lines.append(
            f"{result.enqueued} email(s) handed to the workers to send now ({batches}); "
            f"{result.claimed} of them came due since the last run."
        )
    elif result.enqueued:
        if now_count:
            lines.append(f"{now_count} email(s) handed to the workers to send now ({batches}).")
        lines.append(
            f"{len(later)} email(s) postponed to the next send window, next {min(later):%Y-%m-%d %H:%M} UTC "
            "(it is outside their send window now)."
        )
        lines.append(f"{result.claimed} email(s) came due since the last run.")
    else:
        lines.append("Nothing is due right now.")
    for campaign_id, why in sorted(result.held.items()):
        lines.append(f"Not sending {campaign_id}: it is {why}; its emails wait.")
    return lines


@app.command()
def demo(
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 86400.0,
    fresh: Annotated[bool, typer.Option(help="Start from an empty database and outbox")] = True,
    force: Annotated[
        bool, typer.Option("--force", help="With --fresh: also delete subscribers who are not demo runners")
    ] = False,
) -> None:
    """Run the lower-back-pain drip for 30 fictional runners with a real worker and scheduler.
    It refuses to wipe a database that holds other subscribers unless --force."""
    from cadence.operations.demo import run_demo

    run_demo(console, speed=speed, fresh=fresh, force=force)


# Command groups written in their own modules register themselves here.
_COMMAND_MODULES = ("authoring", "bounces", "web", "health", "doctor", "lifecycle", "newsletters", "users", "staff")
_CAMPAIGN_COMMANDS = ("authoring", "lifecycle")  # these add to `cadence campaigns`
for _module in (f"cadence.cli.{name}" for name in _COMMAND_MODULES):
    try:
        _registrar = importlib.import_module(_module)
    except ModuleNotFoundError as exc:
        if exc.name != _module:
            raise
        continue
    _registrar.register(campaigns_app if _module.endswith(_CAMPAIGN_COMMANDS) else app)


def main() -> None:
    """Entry point: run the app; exit 0, 1 (an error) or 2 (a usage error) with one line on
    stderr, never a traceback unless --debug (see cadence.cli.failure)."""
    from cadence.cli.failure import run
    from cadence.cli.options import tidy_help

    tidy_help(app)
    run(app)


if __name__ == "__main__":  # pragma: no cover
    from cadence.config import export_unbuffered_output

    export_unbuffered_output()
    main()

__all__ = ["app", "main"]
