"""Cadence vs listmonk v6.2.0 on the same job, side by side in one run (issue 15).

    python bench/vs_listmonk.py [--n 20000] [--rounds 3] [--cadence 2:prefork:1,2:solo:1,2:threads:2,1:threads:4]
                                [--listmonk-sweep 2,20,50,100,200] [--listmonk 2]

The job: N subscribers get the first email of the lower-back-pain course (step 1, the real
multipart/alternative email: ~17 KB HTML + ~4 KB text, personalised by first name), through
PostgreSQL, to postfix's ``smtp-sink`` on loopback (one sink for everyone; its own message count
checks every run).

1. Cadence builds one message in this process; its HTML and text, with the first name put back
   as ``{{ .Subscriber.FirstName }}``, are listmonk's body, and its MIME bytes the C client's.
2. A sweep of listmonk's SMTP connections (``--listmonk-sweep``, concurrency = connections, one
   run each) picks listmonk's best setting.
3. ``--rounds`` rounds, each running every Cadence setting, listmonk's best and ``--listmonk``
   (equal connections), and postfix's ``smtp-source`` (C) on the MIME bytes, in alternating order.
   Medians per setting.

Timing. listmonk: its own log lines "start processing campaign" to "finished" (the driver's
``seconds_engine``; its fixed 5 s scan wait left out). Cadence: from the tick (this process runs
``engine.tick`` and queues the send tasks, as the scheduler's tick task does) to the poll that
finds no delivery left queued or sending (every 50 ms), after a warm-up batch per worker process.
smtp-source: the command's wall time (connects included).

Memory. A thread samples every process of each side every 0.1 s: ``VmRSS`` and the ``Pss`` of
``/proc/<pid>/smaps_rollup``; at the end ``VmHWM`` (the kernel's peak). Per process the peak RSS
is max(VmHWM, sampled VmRSS); the table sums the peaks of a side's processes, and the PSS
likewise (PSS shares pages the processes share, so the summed PSS is the honest total).

A Cadence setting ``W:POOL:C`` is W ``cadence worker`` processes: pool solo or prefork (prefork
with concurrency 1: a parent and one sending process, the layout before issue 15), each with C
SMTP connections (``CADENCE_EMAIL_URL=...&connections=C``); or pool threads, each with C threads
sending a batch each over its own connection (``--pool threads --concurrency C``).
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_NOW,
    CAMPAIGN_ID,
    ROOT,
    CpuSnapshot,
    Sink,
    Workers,
    cadence_env,
    copy_subscribers,
    cpu_snapshot,
    cpu_usage,
    enroll_ids,
    log,
    machine_info,
    machine_markdown,
    postgres_database,
    redis_database,
    smtp_sink,
    use_env,
    write_section,
)
from send_throughput import profile_deliver, states, tick_and_enqueue, wait_sent

LISTMONK_DIR = Path(os.environ.get("CADENCE_BENCH_LISTMONK_DIR", ROOT.parent / "shared" / "peers" / "listmonk"))
SMTP_SOURCE = os.environ.get("CADENCE_BENCH_SMTP_SOURCE", "/usr/sbin/smtp-source")

# --- memory sampling -----------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (/proc/<pid>/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_cpu(before: CpuSnapshot, after: CpuSnapshot, sink_pid: int) -> dict[str, float]:
    """CPU seconds of PostgreSQL's processes (every "postgres" one) and of the sink between two
    snapshots (_common.cpu_usage: a backend started in between counts whole)."""

    def classify(pid: int, comm: str, _pgid: int) -> str | None:
        return "sink" if pid == sink_pid else "postgres" if comm == "postgres" else None

    usage = cpu_usage(before, after, classify)[1]
    return {"postgres": usage.get("postgres", 0.0), "sink": usage.get("sink", 0.0)}


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


@dataclass
class Peak:
    name: str
    rss_kb: int = 0
    pss_kb: int = 0
    first_kb: int = 0  # RSS at the first sample (a worker: ready, before any batch)
    cpu_s: float = 0.0  # CPU seconds at the last sample
    cpu_mark: float = 0.0  # ... at mark()


class MemorySampler:
    """Peak RSS and PSS of the processes `find` names (pid -> label), sampled every 0.1 s."""

    def __init__(self, find: Callable[[], dict[int, str]]) -> None:
        self.find = find
        self.peaks: dict[int, Peak] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(final=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.sample()

    def sample(self, final: bool = False) -> None:
        for pid, name in self.find().items():
            peak = self.peaks.setdefault(pid, Peak(name))
            rss = _status_kb(pid, "VmHWM" if final else "VmRSS")
            peak.first_kb = peak.first_kb or rss
            peak.cpu_s = max(peak.cpu_s, _cpu_s(pid))
            peak.rss_kb = max(peak.rss_kb, rss)
            if not final:
                peak.pss_kb = max(peak.pss_kb, _pss_kb(pid))

    def mark(self) -> None:
        """Start counting CPU from now (after a warm-up)."""
        self.sample()
        for peak in self.peaks.values():
            peak.cpu_mark = peak.cpu_s

    def cpu_seconds(self) -> float:
        return sum(p.cpu_s - p.cpu_mark for p in self.peaks.values())

    def total_mb(self) -> tuple[float, float]:
        return (
            sum(p.rss_kb for p in self.peaks.values()) / 1024,
            sum(p.pss_kb for p in self.peaks.values()) / 1024,
        )

    def drop_transient(self) -> None:
        """Forget processes seen without memory (a short-lived helper a worker ran at start)."""
        self.peaks = {pid: p for pid, p in self.peaks.items() if p.rss_kb > 0}

    def detail(self) -> str:
        return ", ".join(
            f"{p.name} {p.first_kb / 1024:.0f}→{p.rss_kb / 1024:.0f}"
            for p in sorted(self.peaks.values(), key=lambda p: p.name)
        )


# --- one measured run of each kind --------------------------------------------------------------


@dataclass
class Run:
    system: str
    setting: str
    seconds: float
    emails: int
    rss_mb: float
    pss_mb: float
    processes: int
    load: float
    detail: str = ""
    cpu_s: float = 0.0  # CPU seconds of the side's processes during the run (smtp-source: none)
    pg_cpu_s: float | None = None  # PostgreSQL's processes during the measured run (Cadence only)
    sink_cpu_s: float = 0.0  # the smtp-sink's CPU seconds during the run

    def us(self, seconds: float | None) -> str:
        return "—" if seconds is None else f"{seconds / self.emails * 1e6:,.0f}"

    @property
    def rate(self) -> float:
        return self.emails / self.seconds


@dataclass
class CadenceSetting:
    workers: int
    pool: str
    connections: int

    @classmethod
    def parse(cls, text: str) -> CadenceSetting:
        try:
            workers, pool, connections = text.split(":")
            setting = cls(int(workers), pool, int(connections))
        except ValueError:
            raise SystemExit(f"--cadence {text!r}: expected WORKERS:POOL:CONNECTIONS, e.g. 2:solo:4") from None
        if pool not in ("solo", "prefork", "threads") or setting.workers < 1 or setting.connections < 1:
            raise SystemExit(f"--cadence {text!r}: pool solo, prefork or threads, at least 1 worker and 1 connection")
        return setting

    @property
    def label(self) -> str:
        if self.pool == "threads":
            return f"{self.workers} workers × (1 process, {self.connections} threads, an SMTP connection each)"
        layout = "1 process" if self.pool == "solo" else "parent + 1 pool process"
        conns = f"{self.connections} SMTP connection{'s' if self.connections > 1 else ''}"
        return f"{self.workers} workers × ({layout}, {conns})"

    @property
    def key(self) -> str:
        return f"{self.workers}:{self.pool}:{self.connections}"


@dataclass
class CadenceBench:
    """Everything a Cadence run needs: the environment, the loaded subscriber sets, the app."""

    env: dict[str, str]
    sink: Sink
    conn: Any
    runtime: Any
    app: Any
    tmp: Path
    sets: list[tuple[int, int]] = field(default_factory=list)
    warm: list[tuple[int, int]] = field(default_factory=list)
    sent_before: int = 0
    runs: int = 0

    def run(self, setting: CadenceSetting, n: int) -> Run:
        env = dict(self.env)
        threads = setting.pool == "threads"
        env["CADENCE_EMAIL_URL"] += f"&connections={1 if threads else setting.connections}"
        self.runs += 1  # a fresh log folder per run: wait_ready looks for " ready." in it
        workers = Workers(self.tmp / "logs" / f"{self.runs}-{setting.key.replace(':', '-')}")
        extra = ("--pool", setting.pool)

        def find() -> dict[int, str]:
            groups = workers.pgids
            return {pid: f"worker pid {pid}" for pid in _pids() if _pgid(pid) in groups}

        try:
            workers.start(env, setting.workers, setting.connections if threads else 1, extra)
            workers.wait_ready()
            with MemorySampler(find) as memory:
                warm = self.warm.pop()
                enroll_ids(self.conn, *warm, BENCH_NOW, BENCH_NOW)
                tick_and_enqueue(self.runtime, self.app, None)
                wait_sent(self.conn, workers, warm[1] - warm[0] + 1, time.perf_counter(), timeout=300)
                main = self.sets.pop()
                enroll_ids(self.conn, *main, BENCH_NOW, BENCH_NOW)
                self.conn.execute("ANALYZE enrollments")
                sink_before = self.sink.messages()
                load = os.getloadavg()[0]
                memory.mark()
                cpu_before = cpu_snapshot()
                start = time.perf_counter()
                tick_and_enqueue(self.runtime, self.app, None)
                samples = wait_sent(self.conn, workers, n, start, timeout=max(600.0, n / 20))
                seconds = samples[-1][0]
                cpu_after = cpu_snapshot()
                memory.sample()
            time.sleep(0.3)  # smtp-sink updates its counter when "." is received
            got = self.sink.messages() - sink_before
            final = states(self.conn)
            self.sent_before += warm[1] - warm[0] + 1 + n
            if final.get("sent", 0) != self.sent_before or got != n:
                raise SystemExit(f"Cadence {setting.key}: states {final}, sink counted {got} of {n}")
            errors = workers.errors()
            if errors:
                log("worker log errors:\n" + "\n".join(errors[-10:]))
        finally:
            workers.stop()
        memory.drop_transient()
        rss, pss = memory.total_mb()
        run = Run("Cadence", setting.key, seconds, n, rss, pss, len(memory.peaks), load, memory.detail())
        run.cpu_s = memory.cpu_seconds()
        # PostgreSQL's backends (every "postgres" process: the tick's, the workers', the bench's
        # own polling, which is small) and the sink, over the measured run: what an email costs
        # the machine beyond the workers.
        machine = _machine_cpu(cpu_before, cpu_after, self.sink.pid)
        run.pg_cpu_s, run.sink_cpu_s = machine["postgres"], machine["sink"]
        log(
            f"Cadence {setting.key}: {run.rate:.0f}/s, {rss:.0f} MB RSS ({pss:.0f} PSS) [{run.detail}], load {load:.1f}"
        )
        return run


def listmonk_run(sink: Sink, body: Path, n: int, conns: int, subject: str, sender: str) -> Run:
    driver = LISTMONK_DIR / "bench_listmonk.py"
    binary = str(LISTMONK_DIR / "listmonk")

    def find() -> dict[int, str]:
        return {
            pid: "listmonk"
            for pid in _pids()
            if _cmdline(pid).startswith(binary + " ") and "--install" not in _cmdline(pid)
        }

    sink_before = sink.messages()
    cpu_before = cpu_snapshot()
    with MemorySampler(find) as memory:
        done = subprocess.run(
            [
                sys.executable, str(driver), "--smtp-port", str(sink.port), "--n", str(n),
                "--html", str(body / "body.html"), "--text", str(body / "body.txt"),
                "--subject", subject, "--from-email", sender,
                "--concurrency", str(conns), "--conns", str(conns), "--runs", "1", "--pause", "0",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    sink_cpu = _machine_cpu(cpu_before, cpu_snapshot(), sink.pid)["sink"]
    if done.returncode != 0:
        raise SystemExit(f"listmonk driver failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    time.sleep(0.3)
    got = sink.messages() - sink_before
    if result["sent"] != n or got != n:
        raise SystemExit(f"listmonk {conns} conns: sent {result['sent']}, sink counted {got} of {n}")
    _, pss = memory.total_mb()
    rss = max(float(result["peak_rss_mb"]), memory.total_mb()[0])
    run = Run("listmonk", str(conns), float(result["seconds_engine"]), n, rss, pss, 1, float(result["load1_before"]))
    run.cpu_s = memory.cpu_seconds()  # its whole life: start-up, rendering and sending
    run.sink_cpu_s = sink_cpu  # its PostgreSQL time is not measured: the driver loads subscribers too
    log(f"listmonk {conns} conns: {run.rate:.0f}/s, {rss:.0f} MB RSS ({pss:.0f} PSS), load {run.load:.1f}")
    return run


def smtp_source_run(sink: Sink, message: Path, n: int, sessions: int) -> Run:
    sink_before = sink.messages()
    load = os.getloadavg()[0]
    cpu_before = cpu_snapshot()
    start = time.perf_counter()
    subprocess.run(
        [SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(n), "-F", str(message), "-M", "bench",
         "-f", "care@precisionbodywork.example", "-t", "runner@example.com", f"{sink.host}:{sink.port}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    sink_cpu = _machine_cpu(cpu_before, cpu_snapshot(), sink.pid)["sink"]
    time.sleep(0.3)
    got = sink.messages() - sink_before
    if got != n:
        raise SystemExit(f"smtp-source: the sink counted {got} of {n}")
    log(f"smtp-source {sessions} sessions: {n / seconds:.0f}/s, load {load:.1f}")
    run = Run("smtp-source", str(sessions), seconds, n, 0.0, 0.0, 1, load)
    run.sink_cpu_s = sink_cpu
    return run


# --- the body ------------------------------------------------------------------------------------


def write_bodies(mime: bytes, first_name: str, folder: Path) -> tuple[str, str]:
    """listmonk's body (HTML, text with the first name as its placeholder) and the C client's
    message file (LF line ends: smtp-source appends CRLF). Returns (subject, From)."""
    parsed = email.message_from_bytes(mime, policy=email.policy.default)
    html_part, text_part = parsed.get_body(("html",)), parsed.get_body(("plain",))
    assert html_part is not None and text_part is not None
    placeholder = "{{ .Subscriber.FirstName }}"
    html = str(html_part.get_content()).replace(first_name, placeholder)  # type: ignore[attr-defined]
    text = str(text_part.get_content()).replace(first_name, placeholder)  # type: ignore[attr-defined]
    (folder / "body.html").write_text(html, encoding="utf-8")
    (folder / "body.txt").write_text(text, encoding="utf-8")
    (folder / "message.eml").write_bytes(mime.replace(b"\r\n", b"\n"))
    return str(parsed["Subject"]), str(parsed["From"])


# --- main ------------------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[len(ordered) // 2]


def fmt_rates(runs: list[Run]) -> str:
    return ", ".join(f"{r.rate:,.0f}" for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="emails per run (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3); medians")
    parser.add_argument(
        "--cadence",
        default="2:prefork:1,2:solo:1,2:threads:2,1:threads:4",
        help="Cadence settings WORKERS:POOL:CONNECTIONS, comma-separated",
    )
    parser.add_argument("--listmonk-sweep", default="2,20,50,100,200", help="listmonk connections to try once each")
    parser.add_argument("--listmonk", type=int, default=2, help="listmonk's equal-connections setting (default 2)")
    parser.add_argument("--sessions", type=int, default=50, help="smtp-source parallel sessions (default 50)")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    args = parser.parse_args()
    settings_list = [CadenceSetting.parse(t) for t in args.cadence.split(",") if t]
    sweep = [int(c) for c in args.listmonk_sweep.split(",") if c]
    if not (LISTMONK_DIR / "listmonk").exists():
        raise SystemExit(f"{LISTMONK_DIR}/listmonk not found (../shared/peers/listmonk)")
    started = time.perf_counter()
    info = machine_info()
    batch = 250
    warm_n = 4 * batch

    with tempfile.TemporaryDirectory(prefix="cadence-vs-listmonk-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "data").mkdir()
        with smtp_sink(tmp) as sink, postgres_database() as pg_url, redis_database(args.redis_db) as broker_url:
            clock_file = tmp / "clock"
            clock_file.write_text(BENCH_NOW.isoformat())
            env = cadence_env(
                tmp / "data",
                CADENCE_DATABASE_URL=pg_url,
                CADENCE_BROKER_URL=broker_url,
                CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
                CADENCE_BATCH_SIZE=str(batch),
                CADENCE_CLOCK=f"file:{clock_file}",
            )
            use_env(env)
            import psycopg

            from cadence.config import load_settings
            from cadence.db.migrate import upgrade
            from cadence.db.session import transaction
            from cadence.operations.delivery import ensure_links
            from cadence.operations.runtime import Runtime
            from cadence.tasks import make_celery

            settings = load_settings(env)
            upgrade(settings.database_url)
            runtime = Runtime.from_settings(settings)
            campaign = runtime.catalog.get(CAMPAIGN_ID)
            with transaction(settings.database_url) as session:  # see send_throughput.py: link rows first
                for segment in campaign.segments:
                    ensure_links(session, runtime.renderer.variant(campaign, campaign.steps[0], segment).links)
            conn = psycopg.connect(pg_url, autocommit=True)
            runs_needed = args.rounds * len(settings_list)
            first = 0
            sample_set = copy_subscribers(conn, first, 3, BENCH_NOW)
            first += 3
            bench = CadenceBench(env, sink, conn, runtime, make_celery(settings), tmp)
            t = time.perf_counter()
            for _ in range(runs_needed):
                bench.sets.append(copy_subscribers(conn, first, args.n, BENCH_NOW))
                first += args.n
                bench.warm.append(copy_subscribers(conn, first, warm_n, BENCH_NOW))
                first += warm_n
            conn.execute("ANALYZE")
            log(f"loaded {first} subscribers in {time.perf_counter() - t:.1f}s")

            # One real message (this process, through the sink) gives listmonk's body and the C client's bytes.
            enroll_ids(conn, *sample_set, BENCH_NOW, BENCH_NOW)
            from cadence.operations import enrollment as engine

            ids = [i for b in engine.tick(runtime).batches for i in b]
            captured: list[tuple[str, str, bytes]] = []
            profile_deliver(runtime, [ids], captured)
            runtime.close()
            bench.sent_before = len(ids)
            recipient = captured[0][1]  # runner<i>@example.com, first name Runner<i> (copy_subscribers)
            first_name = "R" + recipient.split("@")[0][1:]
            subject, sender = write_bodies(captured[0][2], first_name, tmp)
            html_kb = (tmp / "body.html").stat().st_size / 1024
            text_kb = (tmp / "body.txt").stat().st_size / 1024
            mime_kb = len(captured[0][2]) / 1024
            log(f"body: {html_kb:.1f} KB HTML + {text_kb:.1f} KB text; {mime_kb:.1f} KB MIME")

            sweep_runs = [listmonk_run(sink, tmp, args.n, c, subject, sender) for c in sweep]
            best_conns = max(sweep_runs, key=lambda r: r.rate).setting
            log(f"listmonk's best in the sweep: {best_conns} connections")
            listmonk_settings = list(dict.fromkeys([str(args.listmonk), best_conns]))

            results: dict[tuple[str, str], list[Run]] = {}
            order: list[Callable[[], Run]] = []
            for s in settings_list:
                order.append(lambda s=s: bench.run(s, args.n))  # type: ignore[misc]
            for c in listmonk_settings:
                order.append(lambda c=c: listmonk_run(sink, tmp, args.n, int(c), subject, sender))  # type: ignore[misc]
            order.append(lambda: smtp_source_run(sink, tmp / "message.eml", args.n, args.sessions))
            for r in range(args.rounds):
                log(f"--- round {r + 1} of {args.rounds}")
                for job in order if r % 2 == 0 else list(reversed(order)):
                    run = job()
                    results.setdefault((run.system, run.setting), []).append(run)
                    time.sleep(2)  # let the machine settle between systems

    wall = time.perf_counter() - started
    report(args, info, results, sweep_runs, settings_list, best_conns, (html_kb, text_kb, mime_kb), wall)


def report(
    args: argparse.Namespace,
    info: dict[str, str],
    results: dict[tuple[str, str], list[Run]],
    sweep_runs: list[Run],
    settings_list: list[CadenceSetting],
    best_conns: str,
    sizes: tuple[float, float, float],
    wall: float,
) -> None:
    medians = {key: median_run(runs) for key, runs in results.items()}
    cadence_best = max((m for (system, _), m in medians.items() if system == "Cadence"), key=lambda r: r.rate)
    # listmonk's best: the fastest median of the settings run in every round (the sweep chose
    # one of them; under load the equal-connections setting can be the faster one).
    listmonk_best = max((m for (system, _), m in medians.items() if system == "listmonk"), key=lambda r: r.rate)
    best_conns = listmonk_best.setting
    document = {
        "n": args.n,
        "rounds": args.rounds,
        "runs": [
            {
                "system": r.system, "setting": r.setting, "seconds": round(r.seconds, 3),
                "emails_per_s": round(r.rate, 1), "peak_rss_mb": round(r.rss_mb, 1), "peak_pss_mb": round(r.pss_mb, 1),
                "processes": r.processes, "load1": r.load, "cpu_us_per_email": round(r.cpu_s / r.emails * 1e6),
                "postgres_cpu_us_per_email": None if r.pg_cpu_s is None else round(r.pg_cpu_s / r.emails * 1e6),
                "sink_cpu_us_per_email": round(r.sink_cpu_s / r.emails * 1e6),
            }
            for runs in results.values() for r in runs
        ],
        "listmonk_sweep": {r.setting: round(r.rate, 1) for r in sweep_runs},
        "cadence_best": cadence_best.setting,
        "listmonk_best": best_conns,
        "ratio_best": round(cadence_best.rate / listmonk_best.rate, 3),
        "memory_ratio": round(cadence_best.rss_mb / listmonk_best.rss_mb, 3),
    }  # fmt: skip
    print(json.dumps(document, indent=2))

    rows = []
    labels = {s.key: s.label for s in settings_list}
    for (system, setting), runs in results.items():
        m = medians[(system, setting)]
        if system == "Cadence":
            what = labels[setting]
        elif system == "listmonk":
            what = f"concurrency {setting}, {setting} SMTP connections" + (
                " (its best here)" if setting == best_conns else ""
            )
        else:
            what = f"{setting} sessions, the MIME bytes of the Cadence message"
        memory = (
            "—"
            if system == "smtp-source"
            else f"{m.rss_mb:,.0f} MB ({m.pss_mb:,.0f} MB PSS), {m.processes} process(es)"
        )
        cpu = "—" if system == "smtp-source" else m.us(m.cpu_s)
        rows.append(
            [f"**{system}**" if m is cadence_best else system, what, f"**{m.rate:,.0f}**", fmt_rates(runs), memory,
             cpu, m.us(m.pg_cpu_s), m.us(m.sink_cpu_s), ", ".join(f"{r.load:.1f}" for r in runs)]
        )  # fmt: skip
    sweep_text = ", ".join(f"{r.setting} → {r.rate:,.0f}/s ({r.load:.1f})" for r in sweep_runs)
    html_kb, text_kb, mime_kb = sizes
    ratio = cadence_best.rate / listmonk_best.rate
    mem = cadence_best.rss_mb / listmonk_best.rss_mb
    body = f"""## Cadence vs listmonk v6.2.0, side by side (issue 15)

`python bench/vs_listmonk.py --n {args.n} --rounds {args.rounds} --cadence {args.cadence}` ({wall / 60:.0f} min wall).

The same job for everyone: {args.n:,} subscribers get the first email of the lower-back-pain course
({html_kb:.1f} KB HTML + {text_kb:.1f} KB text, {mime_kb:.1f} KB as MIME), from PostgreSQL, to one
postfix `smtp-sink` on loopback that counted every message of every run. {args.rounds} rounds, the
settings in alternating order; each cell is the median run (all runs beside it). Memory: per
process max(VmHWM, sampled VmRSS) and the peak of `smaps_rollup` Pss, every 0.1 s, summed over
the side's processes (Cadence: every `cadence worker` process; Redis and PostgreSQL are shared
and not counted for either side). CPU: user + system time of the same processes
(`/proc/<pid>/stat`) per email: Cadence's workers during the measured run, listmonk's process over
its whole run (start-up included). Beside it, what an email costs the rest of the machine: every
PostgreSQL process's CPU during Cadence's measured run (PG; listmonk's is not measured, its driver
loads its subscribers in the same run), and the sink's (both). Load: the
1-minute load average at the start of each run
(2 CPUs, other engineers' work shares them).

| sender | setting | emails/s (median) | runs | peak memory (median run) | CPU µs/email | PG µs | sink µs | load |
|---|---|---|---|---|---|---|---|---|
{chr(10).join("| " + " | ".join(r) + " |" for r in rows)}

**Cadence's best / listmonk's best: {ratio:.2f}×** (goal ≥ 1.2×), with {mem:.0%} of its peak memory
(goal ≤ 33 %). listmonk's sweep of SMTP connections (concurrency = connections, one run each; emails/s,
load): {sweep_text}.

How the times are taken. listmonk: from its log line "start processing campaign" to "campaign
(...) finished" (the driver's `seconds_engine`; its fixed ~5 s wait for the next campaign scan is
left out, the database counts are written before "finished"). Cadence: from the tick (this
process claims the due enrollments, inserts the ledger rows and queues the send tasks, as the
scheduler's tick task does) to the first poll (every 50 ms) that finds no delivery queued or
sending, after a warm-up of 1,000 emails through the same workers (compiled templates, open
connections: listmonk's compile happens before its first log line too). smtp-source: the
command's wall time, connects included.

What each side does per email that the other does not:

- **Cadence**: re-checks the subscriber at send time (status, suppression list, pause, send
  window, segment), renders the segment's compiled variant (Jinja) with three signed links
  (unsubscribe, preferences, web view) and signed click-tracking URLs for every link plus an open
  pixel, builds its own MIME (List-Unsubscribe + One-Click, List-Id, a stable signed
  Message-ID), and records every result in the ledger (one `deliveries` row per email, inserted
  by the tick and updated when sent, plus the enrollment's next step), committed every group of
  at most 20 messages: a crash repeats at most one group, and a subscriber gets each step once.
  Tasks go through Redis (acks late).
- **listmonk**: fetches subscribers in batches of 1,000 with a cursor, renders a bare Go template
  (no tracking links, no pixel: the driver's template has none) and keeps its progress as one
  counter per campaign (`sent`, `last_subscriber_id`), with no per-email row: after a crash it
  resumes from the last saved cursor. With the driver's `message_rate` it renders the whole
  campaign into memory ahead of sending (hence its 0.5-1.2 GB).
- **smtp-source** sends the same bytes again and again: no database, no rendering: what this
  sink takes from a C client on this box at the time.

### Machine

{machine_markdown(info)}

### Reproduce

```
make system-deps   # postfix: /usr/sbin/smtp-sink and smtp-source; PostgreSQL on 127.0.0.1:5432, Redis on :6379
.venv/bin/python bench/vs_listmonk.py                  # ~{wall / 60:.0f} min on 2 cores
.venv/bin/python bench/vs_listmonk.py --rounds 1 --listmonk-sweep 100 --cadence 2:solo:4 --no-doc   # quick look
```
"""
    print(body, file=sys.stderr)
    if not args.no_doc:
        write_section("vs_listmonk", body)


if __name__ == "__main__":
    main()
