"""The console's import at scale: a 1,000,000-row CSV uploaded to ``cadence web`` and imported by a
real ``cadence worker`` (Celery, Redis broker) into PostgreSQL, as an editor does it in the
browser. Measures the upload, the import's rows/s as the job page shows it, and the peak RSS
(``VmHWM``) of the worker and of the web process (the upload is streamed to disk, never held).

    nice -n 19 python bench/console_import.py [--rows 1000000] [--no-doc]

Two uploads of the same generated file (bench/import.py's generator): "load the valid rows"
into an empty database (every row created, a commit per 1,000 rows), then "all or nothing"
(every row unchanged, one transaction). Writes the ``console-import`` section of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    cadence_env,
    free_port,
    log,
    machine_info,
    machine_markdown,
    postgres_database,
    redis_database,
    sqlalchemy_url,
    table,
    write_section,
)

PASSWORD = "a long and boring bench password"


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MB: now, and the peak since it started."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def log_in(client: Any, env: dict[str, str], email: str) -> None:
    from tests.support.web import csrf_token

    from cadence.config import load_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_accounts import add_user

    settings = load_settings(env)
    with transaction(settings.database_url) as session:
        link = add_user(session, email, "editor", actor="cli:bench", now=settings.clock().now())
    setup = link.url(settings.base_url).removeprefix(settings.base_url)
    token = csrf_token(client.get(setup).text)
    done = client.post(setup, data={"csrf_token": token, "password": PASSWORD, "confirm": PASSWORD})
    assert done.status_code == 303, done.text
    token = csrf_token(client.get("/admin/login").text)
    answer = client.post("/admin/login", data={"csrf_token": token, "email": email, "password": PASSWORD})
    assert answer.status_code == 303, answer.text


def upload_and_wait(client: Any, csv_path: Path, mode: str, worker: int, web: int) -> dict[str, Any]:
    from tests.support.web import csrf_token

    token = csrf_token(client.get("/admin/imports").text)
    started = time.monotonic()
    with csv_path.open("rb") as body:
        answer = client.post(
            "/admin/imports",
            data={"csrf_token": token, "mode": mode},
            files={"file": (csv_path.name, body, "text/csv")},
            timeout=600,
        )
    upload_s = time.monotonic() - started
    assert answer.status_code == 303, answer.text[:2000]
    job_path = answer.headers["location"]
    log(f"uploaded and checked in {upload_s:.1f} s: {job_path}")
    # The check page's "Import" button (the first CHECK_ROWS rows were read at upload).
    check = client.get(job_path).text
    confirmed = client.post(f"{job_path}/start", data={"csrf_token": csrf_token(check)})
    assert confirmed.status_code == 303, confirmed.text[:2000]
    seen_rows: list[str] = []
    while True:
        job = client.get(f"{job_path}/progress.json").json()
        if job["rows_read"] not in seen_rows[-1:]:
            seen_rows.append(job["rows_read"])
            log(f"{job['state']}: {job['rows_read']} rows read, {job['loaded']} loaded, {job['rate']} rows/s")
        if job["finished"]:
            break
        time.sleep(1)
    total_s = time.monotonic() - started
    return {
        **job,
        "upload_s": upload_s,
        "total_s": total_s,
        "updates": len(seen_rows),
        "worker_mb": peak_rss_mb(worker)[1],
        "web_mb": peak_rss_mb(web)[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-doc", action="store_true", help="print, do not write docs/performance.md")
    args = parser.parse_args()
    generate = importlib.import_module("import").generate  # bench/import.py's file
    import httpx

    cadence = str(Path(sys.executable).with_name("cadence"))
    procs: list[subprocess.Popen[bytes]] = []
    with (
        tempfile.TemporaryDirectory(prefix="cadence-console-import-") as tmp,
        postgres_database() as pg,
        redis_database() as redis_url,
    ):
        work = Path(tmp)
        csv_path = work / "runners.csv"
        log(f"generating {args.rows:,} rows")
        generate(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1e6
        port = free_port()
        env = cadence_env(
            work / "data",
            CADENCE_DATABASE_URL=sqlalchemy_url(pg),
            CADENCE_BROKER_URL=redis_url,
            CADENCE_BASE_URL=f"http://127.0.0.1:{port}",
            CADENCE_IMPORT_MAX_MB="500",
        )
        info = machine_info(pg)
        subprocess.run([cadence, "db", "upgrade"], env=env, check=True, capture_output=True)
        try:
            for name, command in (
                ("web", ["web", "--port", str(port), "--log-level", "warning"]),
                ("worker", ["worker", "--concurrency", "1", "--loglevel", "WARNING"]),
            ):
                out = (work / f"{name}.log").open("wb")
                procs.append(subprocess.Popen([cadence, *command], env=env, stdout=out, stderr=subprocess.STDOUT))
            web, worker = procs
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/admin/login").raise_for_status()
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, (work / "web.log").read_text()
                    time.sleep(0.2)
            log_in(client, env, "bench.editor@clinic.example")
            idle_worker, idle_web = peak_rss_mb(worker.pid)[0], peak_rss_mb(web.pid)[0]
            load_before = os.getloadavg()[0]
            results = []
            for label, mode in (
                ("load the valid rows, into an empty table (all created)", "valid"),
                ("all or nothing, same file again (all unchanged)", "all"),
            ):
                log(label)
                results.append((label, upload_and_wait(client, csv_path, mode, worker.pid, web.pid)))
            load_after = os.getloadavg()[0]
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)

    rows = []
    for label, r in results:
        rows.append(
            [
                label,
                r["state"],
                f"{r['upload_s']:.1f}",
                f"{r['total_s']:.1f}",
                r["rate"],
                f"{r['created']} / {r['updated']} / {r['unchanged']} / {r['rejected']}",
                str(r["updates"]),
                f"{r['worker_mb']:.0f}",
                f"{r['web_mb']:.0f}",
            ]
        )
    headers = [
        "upload",
        "state",
        "upload s",
        "upload to done s",
        "rows/s (job page)",
        "created / updated / unchanged / bad",
        "progress values seen",
        "worker peak RSS MB",
        "web peak RSS MB",
    ]
    body = f"""## Console import: {args.rows:,} rows uploaded, imported by a worker

`nice -n 19 python bench/console_import.py --rows {args.rows}`: the generated CSV of bench/import.py
({size_mb:.0f} MB) uploaded twice through `POST /admin/imports` as a logged-in editor, to
`cadence web` with Redis as the broker, and imported by one `cadence worker --concurrency 1`
(the Celery task `cadence.import_job`) into PostgreSQL. "rows/s" is what the job page shows
(rows read over the job's running time); "progress values seen" counts the distinct row counts
the bench saw polling `progress.json` once a second, i.e. the page moved while the file was
read. Peak RSS is each process's `VmHWM` since it started (idle before the first upload: worker
{idle_worker:.0f} MB, web {idle_web:.0f} MB); the bound asked for in issue 14 is 300 MB for the worker.

{table(headers, rows)}

The web process streams the upload to `imports/<job id>.csv` in the data dir
(web/console/uploads.py), so its memory does not grow with the file. The worker runs the same
streaming importer as `cadence subscribers import` (bench/import.py's section), plus a progress
`UPDATE` of the job row at most twice a second in a transaction of its own. The bench runs at
`nice -n 19` (the house rule for this shared machine), so on a busy machine its rows/s measure
mostly its share of the CPUs: bench/import.py's section gives the importer's own speed. The 1-minute load
average of this shared 2-CPU machine was {load_before:.1f} before and {load_after:.1f} after.

### Machine

{machine_markdown(info)}
"""
    print(body)
    if not args.no_doc:
        write_section("console-import", body)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
