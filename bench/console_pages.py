"""Console pages at scale (issue 14: every page under 300 ms with 1,000,000 subscribers and
6,000,000 deliveries, PostgreSQL).

    nice -n 19 .venv/bin/python bench/console_pages.py build   [--subscribers 1000000]
    nice -n 19 .venv/bin/python bench/console_pages.py measure --label before|after
    .venv/bin/python bench/console_pages.py report             # writes docs/performance.md
    .venv/bin/python bench/console_pages.py drop

Generating a million subscribers takes minutes, so the data lives in a database of its own
(``cadence_bench_console``, ``--database``) kept between the steps: build once, measure the code
before and after a change (``PYTHONPATH=<other checkout>/src`` measures another checkout's code
against the same rows), drop at the end.

The data (``build``): bench/report_scale.py's data set (every subscriber through six steps of
lower-back-pain in one of six segments, 1 % failed, opens, clicks, bounces, complaints over 30
days), plus what the other pages read: a suppression per hard-bounced subscriber, 2 %
unsubscribed, staff tags on 10 %, 200,000 audit entries, 2,000 deliveries still queued, and
the results rollups folded once (as after upgrading to migration 0007).

What is timed (``measure``), for every console page, median of 7 requests after one warm-up:

- **server**: the operation the route calls (operations/console_reads.py,
  console_campaigns.py) in this process: the database work and the Python around it;
- **HTTP**: the whole request to a real ``cadence web`` (uvicorn) logged in as an admin, page
  rendering and the session check included, as a browser would wait for it.

Each run's numbers go to ``bench/results/console_pages-<label>.json``; ``report`` puts the
before/after table in docs/performance.md (section ``console_pages``).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from _common import (
    BENCH_NOW,
    CAMPAIGN_ID,
    PG_ADMIN,
    ROOT,
    cadence_env,
    free_port,
    log,
    machine_info,
    machine_markdown,
    sqlalchemy_url,
    table,
    write_section,
)

RESULTS = ROOT / "bench" / "results"
# The console's clock during the measurement: two weeks after the bench's first sends, so the
# dashboard's 30 days hold every delivery of the data set.
CONSOLE_NOW = BENCH_NOW + timedelta(days=14)
RUNS = 7
ADMIN = "bench-admin@clinic.example"
PASSWORD = "a long bench password for the console"


def _url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


# --- build -----------------------------------------------------------------------------------


def build(name: str, subscribers: int) -> None:
    from cadence.db.migrate import upgrade
    from cadence.db.session import transaction
    from cadence.operations.results import catch_up
    from report_scale import fill

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise SystemExit(f"database {name} exists: `drop` it first, or measure it")
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _url(name)
    database_url = sqlalchemy_url(url)
    upgrade(database_url)
    fill(url, subscribers)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(
            """INSERT INTO suppressions (email_hash, hash_version, reason, detail, created_at)
               SELECT DISTINCT ON (s.id) encode(sha256(convert_to(s.email_key, 'UTF8')), 'hex'), 'sha256',
                      'hard_bounce', '550 5.1.1 no such user', e.created_at
               FROM events e JOIN subscribers s ON s.id = e.subscriber_id
               WHERE e.kind = 'hard_bounce' ORDER BY s.id, e.id"""
        )
        conn.execute("UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = created_at WHERE id % 50 = 7")
        conn.execute(
            """INSERT INTO subscriber_tags (subscriber_id, tag, created_at)
               SELECT id, CASE WHEN id % 20 = 3 THEN 'vip' ELSE 'race-2027' END, created_at
               FROM subscribers WHERE id % 20 IN (3, 4)"""
        )
        conn.execute(
            """INSERT INTO audit_log (at, actor, action, target, detail)
               SELECT %(start)s::timestamp - interval '60 days' + i * interval '26 seconds',
                      (ARRAY['user:ann@clinic.example', 'user:bo@clinic.example', 'cli:staff',
                             'token:crm'])[1 + i %% 4],
                      (ARRAY['subscriber.tag', 'subscriber.suppress', 'campaign.test', 'import'])[1 + i %% 4],
                      'subscriber:' || (1 + i * 7 %% 1000000), '{}'
               FROM generate_series(1, 200000) AS i""",
            {"start": CONSOLE_NOW.replace(tzinfo=None)},
        )
        # A tick's worth of rows still waiting for a worker (a running drip always has some).
        conn.execute(
            """INSERT INTO deliveries (enrollment_id, subscriber_id, campaign_id, step_id, step_index, segment_id,
                   kind, state, attempts, due_at, not_before, message_id, content_hash, last_error, created_at)
               SELECT e.id, e.subscriber_id, e.campaign_id, 'step-6', 6, 'trail+no-race', 'drip', 'queued', 0,
                   %(now)s, %(now)s, '', '', '', %(now)s
               FROM enrollments e WHERE e.id %% 500 = 0""",
            {"now": CONSOLE_NOW.replace(tzinfo=None)},
        )
        conn.execute("VACUUM ANALYZE")
    log(f"extras (suppressions, tags, audit, queued): {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    folded = catch_up(lambda: transaction(database_url), lag=timedelta(0))
    log(f"first fold into the result rollups: {folded:,} rows, {time.perf_counter() - started:.0f} s")


def drop(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    log(f"dropped database {name}")


# --- measure ---------------------------------------------------------------------------------


def median_ms(call: Callable[[], Any], runs: int = RUNS) -> float:
    call()  # warm-up: plans, caches, the catalog's compiled templates
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def pages(middle: int) -> list[tuple[str, str]]:
    """(label, path) of every console page measured."""
    return [
        ("dashboard", "/admin"),
        ("campaigns list", "/admin/campaigns"),
        ("campaign page (results, funnels)", f"/admin/campaigns/{CAMPAIGN_ID}"),
        ("subscribers, no search (first page)", "/admin/subscribers"),
        ("subscribers, search one address", f"/admin/subscribers?q=runner{middle}%40example.com"),
        ("subscribers, search part of a name", f"/admin/subscribers?q=Runner{middle // 100}"),
        ("subscribers, filter: status unsubscribed", "/admin/subscribers?status=unsubscribed"),
        ("subscribers, filter: tag vip + search", f"/admin/subscribers?tag=vip&q=runner{middle // 1000}"),
        ("subscribers, page 2 (next page link)", "@next"),
        ("subscriber profile", f"/admin/subscribers/{middle}"),
        ("suppressions and bounces", "/admin/suppressions"),
        ("audit log", "/admin/audit"),
        ("audit log, one actor", "/admin/audit?actor=user%3Aann%40clinic.example"),
    ]


def server_calls(database_url: str, env: dict[str, str], middle: int) -> dict[str, Callable[[], Any]]:
    """The operation each page's route calls, by page label (what a page costs on the server)."""
    from jinja2 import FileSystemLoader

    from cadence.config import load_settings
    from cadence.core.render import Renderer
    from cadence.db.session import transaction
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations import console_campaigns, console_reads

    settings = load_settings(env)
    catalog = CampaignCatalog(settings.campaigns_dir, settings.templates_dir, base_url=settings.base_url)

    def read(op: Callable[[Any], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with transaction(database_url) as session:
                return op(session)

        return call

    search = console_reads.search_subscribers
    filters = getattr(console_reads, "SearchFilters", None)  # the "after" code has filters

    def find(**given: Any) -> Callable[[], Any]:
        if filters is None:
            return read(lambda s: search(s, given.get("q", "")))
        return read(lambda s: search(s, given.get("q", ""), filters=filters(**given.get("filters", {}))))

    if "sessions" in inspect.signature(console_reads.dashboard).parameters:  # folds in a transaction of its own
        sessions = functools.partial(transaction, database_url)
        dashboard: Callable[[], Any] = lambda: console_reads.dashboard(sessions, catalog, CONSOLE_NOW)  # noqa: E731
    else:
        dashboard = read(lambda s: console_reads.dashboard(s, catalog, CONSOLE_NOW))
    renderer = Renderer(FileSystemLoader(str(settings.templates_dir)))

    def campaign_page() -> None:
        console_campaigns.campaign_page(settings, catalog, CAMPAIGN_ID, CONSOLE_NOW)
        if hasattr(console_campaigns, "preview_grid"):  # the page also lists the emails and their problems
            console_campaigns.preview_grid(settings.campaigns_dir, renderer, CAMPAIGN_ID)

    return {
        "dashboard": dashboard,
        "campaigns list": lambda: console_campaigns.campaign_list(settings),
        "campaign page (results, funnels)": campaign_page,
        "subscribers, no search (first page)": find(),
        "subscribers, search one address": find(q=f"runner{middle}@example.com"),
        "subscribers, search part of a name": find(q=f"Runner{middle // 100}"),
        "subscribers, filter: status unsubscribed": find(filters={"status": "unsubscribed"}),
        "subscribers, filter: tag vip + search": find(q=f"runner{middle // 1000}", filters={"tag": "vip"}),
        "subscriber profile": read(lambda s: console_reads.subscriber_profile(s, middle)),
        "suppressions and bounces": read(lambda s: console_reads.suppressions_and_bounces(s)),
        "audit log": read(lambda s: console_reads.audit_log(s)),
        "audit log, one actor": read(lambda s: console_reads.audit_log(s, actor="user:ann@clinic.example")),
    }


def log_in(database_url: str, client: httpx.Client, base_url: str) -> None:
    import re

    from cadence.db.session import transaction
    from cadence.operations.staff_accounts import add_user

    with transaction(database_url) as session:
        made = add_user(session, ADMIN, "admin", actor="cli:bench", now=CONSOLE_NOW)
    setup = made.url(base_url).removeprefix(base_url)

    def token(html: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert found, html[:500]
        return found.group(1)

    form = client.get(setup)
    done = client.post(setup, data={"csrf_token": token(form.text), "password": PASSWORD, "confirm": PASSWORD})
    assert done.status_code == 303, done.text[:500]
    form = client.get("/admin/login")
    done = client.post("/admin/login", data={"csrf_token": token(form.text), "email": ADMIN, "password": PASSWORD})
    assert done.status_code == 303, done.text[:500]


def measure(name: str, label: str) -> None:
    import cadence

    url = _url(name)
    database_url = sqlalchemy_url(url)
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM subscribers").fetchone()
        deliveries = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        conn.execute("DELETE FROM staff_users WHERE email = %s", (ADMIN,))
        conn.commit()
    assert count and deliveries
    middle = int(count[0]) // 2
    log(f"code: {Path(cadence.__file__).parent}; {count[0]:,} subscribers, {deliveries[0]:,} deliveries")
    from cadence.db.migrate import upgrade

    upgrade(database_url)  # the "after" code's migration (indexes); nothing for the "before" code
    data_dir = Path(tempfile.mkdtemp(prefix="cadence-console-bench-"))
    clock_file = data_dir / "clock"
    clock_file.write_text(CONSOLE_NOW.isoformat())
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = cadence_env(
        data_dir,
        CADENCE_DATABASE_URL=database_url,
        CADENCE_BASE_URL=base_url,
        CADENCE_CLOCK=f"file:{clock_file}",
    )
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    results: dict[str, dict[str, float | None]] = {}
    calls = server_calls(database_url, env, middle)
    for label_, call in calls.items():
        results[label_] = {"server_ms": median_ms(call)}
        log(f"server  {label_}: {results[label_]['server_ms']:.1f} ms")
    cadence_cmd = str(Path(sys.executable).with_name("cadence"))
    out = open(data_dir / "web.log", "wb")  # noqa: SIM115 (open for the server's whole life)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cadence.cli import main; sys.exit(main())", "web", "--port", str(port)]
        if not Path(cadence_cmd).exists()
        else [cadence_cmd, "web", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/admin/login")
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit((data_dir / "web.log").read_text()) from None
                    time.sleep(0.2)
            log_in(database_url, client, base_url)
            next_page = ""
            for label_, path in pages(middle):
                if path == "@next":
                    if not next_page:
                        continue
                    path = next_page
                first = client.get(path)
                if first.status_code != 200:
                    raise SystemExit(f"{path}: {first.status_code}\n{first.text[:800]}")
                if label_.startswith("subscribers, no search"):
                    import re

                    found = re.search(r'href="(/admin/subscribers\?[^"]*)"[^>]*>Next page', first.text)
                    next_page = found.group(1).replace("&amp;", "&") if found else ""
                http_ms = median_ms(lambda p=path: client.get(p).raise_for_status())
                results.setdefault(label_, {"server_ms": None})["http_ms"] = http_ms
                log(f"HTTP    {label_}: {http_ms:.1f} ms")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        out.close()
    RESULTS.mkdir(exist_ok=True)
    document = {
        "label": label,
        "code": str(Path(cadence.__file__).parent),
        "subscribers": int(count[0]),
        "deliveries": int(deliveries[0]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load": os.getloadavg(),
        "pages": results,
        "machine": machine_info(),
    }
    path = RESULTS / f"console_pages-{label}.json"
    path.write_text(json.dumps(document, indent=2))
    log(f"wrote {path.relative_to(ROOT)}")


def report() -> None:
    runs = {p.stem.split("-", 1)[1]: json.loads(p.read_text()) for p in sorted(RESULTS.glob("console_pages-*.json"))}
    before, after = runs.get("before"), runs.get("after")
    if after is None:
        raise SystemExit("measure --label after first")

    def cell(run: dict[str, Any] | None, page: str, key: str) -> str:
        if run is before and "filter" in page:
            return "—"  # the page before had no filters: the request ignored them
        value = (run or {}).get("pages", {}).get(page, {}).get(key)
        return "—" if value is None else f"{value:.0f}"

    rows = [
        [
            page,
            cell(before, page, "server_ms"),
            cell(before, page, "http_ms"),
            cell(after, page, "server_ms"),
            f"**{cell(after, page, 'http_ms')}**",
        ]
        for page in after["pages"]
    ]
    measured = (("before", before), ("after", after))
    loads = "; ".join(f"{label}: {run['measured_at']}, load {run['load'][0]:.1f}" for label, run in measured if run)
    body = "\n\n".join(
        [
            "## Console pages at scale (`bench/console_pages.py`)",
            f"{after['subscribers']:,} subscribers, {after['deliveries']:,} deliveries, PostgreSQL; "
            f"median of {RUNS} requests per page after a warm-up, in ms. *server*: the operation the "
            "route calls, in-process; *HTTP*: the whole request to `cadence web` logged in as an admin "
            "(rendering and the session check included). Target: every page under 300 ms.",
            table(["page", "before: server", "before: HTTP", "after: server", "after: HTTP"], rows),
            f"Measured {loads}. — marks what the code before did not have (the subscriber filters). "
            "Before, page 2 was an OFFSET page; now a keyset page. The campaign page now also lists "
            "the preview grid and the validation problems (kept between views).",
            "What changed (docs/architecture.md, \"Console reads at scale\"): delivery counts from the "
            "results rollups + the rows not folded yet, people per campaign from trigger-kept tallies, "
            "partial and (kind, created_at) indexes for the last 30 days' failures, bounces and complaints, "
            "pg_trgm indexes for the search with a count capped at 1,000 and keyset pages (migration 0011). "
            "The load average is the machine's (2 cores shared by several people): compare rows "
            "measured side by side, not absolute numbers.",
            machine_markdown(after["machine"]),
        ]
    )
    print(body)
    write_section("console_pages", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("build", "measure", "report", "drop"))
    parser.add_argument("--database", default="cadence_bench_console")
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--label", default="after")
    args = parser.parse_args()
    if args.step == "build":
        build(args.database, args.subscribers)
    elif args.step == "measure":
        measure(args.database, args.label)
    elif args.step == "report":
        report()
    else:
        drop(args.database)


if __name__ == "__main__":
    main()
