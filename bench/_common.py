"""Shared helpers for the send-path benchmarks (``bench/send_throughput.py``, ``bench/tick_cost.py``).

Real services only: a throwaway PostgreSQL database, a Redis db number claimed the same way the
test suite claims one (``tests/support/services.py``), postfix's ``smtp-sink`` on loopback, and
``python -m cadence worker`` processes started like ``tests/support/cluster.py`` starts them.

Also here: bulk loading (COPY, ``INSERT ... SELECT generate_series``) so setting up 100,000 or
1,000,000 rows takes seconds, a small exclusive-time profiler (:class:`Buckets`) that times the
send path's functions and every SQL statement from the outside, and the Markdown writer that
keeps each script's section of ``docs/performance.md`` (bench/perfdoc.py).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import perfdoc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: the Redis claim, the Cadence environment, smtp-sink

PG_ADMIN = os.environ.get("CADENCE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("CADENCE_BENCH_REDIS", "redis://127.0.0.1:6379")
SMTP_SINK = os.environ.get("CADENCE_BENCH_SMTP_SINK", "/usr/sbin/smtp-sink")
SECRET_KEY = "bench-secret-key-0123456789abcdef"

# Monday 2026-12-07 12:30 UTC is 07:30 in New York: inside the lower-back-pain window (07-09).
BENCH_NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
CAMPAIGN_ID = "lower-back-pain"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- services ----------------------------------------------------------------------------------


def _pg_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


@contextmanager
def postgres_database(prefix: str = "cadence_bench_") -> Iterator[str]:
    """Create ``cadence_bench_<random>``; yield its ``postgresql://`` URL; drop it afterwards."""
    import psycopg

    name = prefix + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    log(f"created database {name}")
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        log(f"dropped database {name}")


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


@contextmanager
def redis_database(preferred: int = 14) -> Iterator[str]:
    """A Redis db number no test run is using (the test suite's SETNX claim on db 0), flushed
    before and after."""
    from tests.support.services import AllClaimed, claimed_redis_db

    order = [preferred] + [n for n in range(15, 0, -1) if n != preferred]
    try:
        with claimed_redis_db(order, owner="bench", host=REDIS_HOST) as url:
            log(f"using Redis db {url.rsplit('/', 1)[1]} (flushed)")
            yield url
    except AllClaimed as exc:
        raise SystemExit(str(exc)) from exc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sink:
    host: str
    port: int
    output: Path
    pid: int

    def messages(self) -> int:
        """Messages smtp-sink counted so far (its ``-c`` counters: ``... mesg=N``)."""
        found = re.findall(rb"mesg=(\d+)", self.output.read_bytes())
        return int(found[-1]) if found else 0


@contextmanager
def smtp_sink(workdir: Path, backlog: int = 1000) -> Iterator[Sink]:
    """postfix's smtp-sink on a free loopback port: accepts and discards every message."""
    if not Path(SMTP_SINK).exists():
        raise SystemExit(f"{SMTP_SINK} not found (apt-get install postfix)")
    port = free_port()
    output = workdir / "smtp-sink.out"
    args = [SMTP_SINK, "-c"]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    args += [f"127.0.0.1:{port}", str(backlog)]
    with open(output, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"smtp-sink did not start: {output.read_text(errors='replace')}") from None
                time.sleep(0.05)
        log(f"smtp-sink listening on 127.0.0.1:{port} (pid {proc.pid})")
        yield Sink("127.0.0.1", port, output, proc.pid)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cadence_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a Cadence process (and for this process's own settings): the tests' one,
    with the bench's secret and no beat ticks (the bench ticks itself)."""
    from tests.support.cluster import cadence_env as test_env

    return test_env(data_dir, **{"CADENCE_SECRET_KEY": SECRET_KEY, "CADENCE_TICK_SECONDS": "3600", **overrides})


def use_env(env: dict[str, str]) -> None:
    """Make this process see the same CADENCE_* settings as the workers (``config.get_settings``
    reads them once per process), so nothing is created under the repository's ``.cadence``."""
    for key in [k for k in os.environ if k.startswith("CADENCE_")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("CADENCE_")})


class Workers:
    """``python -m cadence worker`` processes, each in its own process group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    @property
    def pgids(self) -> set[int]:
        """Process groups of the workers (each started in its own session: pgid = pid)."""
        return {proc.pid for proc, _ in self.procs}

    def start(self, env: dict[str, str], count: int, concurrency: int, extra: tuple[str, ...] = ()) -> None:
        """`count` workers of `concurrency` (``cadence worker`` picks the pool: solo for 1),
        with `extra` arguments (``--pool prefork``)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            path = self.log_dir / f"worker{k}.log"
            with open(path, "ab") as out:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cadence",
                        "worker",
                        "--concurrency",
                        str(concurrency),
                        "--loglevel",
                        "INFO",
                        *extra,
                    ],
                    env=env,
                    cwd=str(env["CADENCE_DATA_DIR"]),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append((proc, path))

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for proc, path in self.procs:
            while b" ready." not in path.read_bytes():
                if proc.poll() is not None:
                    raise SystemExit(f"worker exited with {proc.returncode}:\n{self.tail(path)}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"worker not ready after {timeout:.0f}s:\n{self.tail(path)}")
                time.sleep(0.1)

    def check_alive(self) -> None:
        for proc, path in self.procs:
            if proc.poll() is not None:
                raise SystemExit(f"worker exited with {proc.returncode}:\n{self.tail(path)}")

    @staticmethod
    def tail(path: Path, chars: int = 4000) -> str:
        return path.read_text(errors="replace")[-chars:]

    def errors(self) -> list[str]:
        lines: list[str] = []
        for _, path in self.procs:
            for line in path.read_text(errors="replace").splitlines():
                if "ERROR" in line or "Traceback" in line or "CRITICAL" in line:
                    lines.append(f"{path.name}: {line}")
        return lines

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()


# --- one measured command ------------------------------------------------------------------


def timed_child(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run `args`; return (wall seconds, stdout). Fails loudly on a non-zero exit."""
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return wall, proc.stdout


def rss_wrapper(args: list[str]) -> list[str]:
    """Run `args` under a tiny Python parent that prints the child's peak RSS (ru_maxrss, KiB)."""
    code = (
        "import os, sys, resource\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execvp(sys.argv[1], sys.argv[1:])\n"
        "_, status, usage = os.wait4(pid, 0)\n"
        "print(f'PEAK_RSS_KIB={usage.ru_maxrss}')\n"
        "print(f'CPU_S={usage.ru_utime + usage.ru_stime}')\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    return [sys.executable, "-c", code, *args]


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall s, peak RSS MB, CPU s of the process itself: not PostgreSQL's), stdout."""
    wall, out = timed_child(rss_wrapper(args), env)
    values = dict(line.split("=", 1) for line in out.splitlines() if line.startswith(("PEAK_RSS_KIB=", "CPU_S=")))
    return wall, int(values["PEAK_RSS_KIB"]) / 1024, float(values["CPU_S"]), out


# --- bulk loading ------------------------------------------------------------------------------

SEGMENT_ATTRIBUTES = (
    '{"terrain": "trails"}',  # trail
    '{"terrain": "roads", "training_for_race": "yes"}',  # race
    '{"terrain": "roads", "training_for_race": "no"}',  # everyday
)


def naive(instant: datetime) -> datetime:
    """How ``UTCDateTime`` stores an instant: naive UTC."""
    return instant.astimezone(UTC).replace(tzinfo=None)


def copy_subscribers(
    conn: Any, first: int, count: int, now: datetime, timezone: str = "America/New_York"
) -> tuple[int, int]:
    """COPY `count` active subscribers ``runner<first..>@example.com``, segments in rotation.
    Returns their (lowest, highest) id: one COPY into a table nobody else writes is contiguous."""
    stamp = naive(now)
    columns = (
        "email, email_key, first_name, attributes, timezone, status, source, created_at, updated_at,"
        " confirmed_at, soft_bounces, consent"
    )
    with conn.cursor() as cur, cur.copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
        for i in range(first, first + count):
            email = f"runner{i}@example.com"
            copy.write_row(
                (
                    email,
                    email,
                    f"Runner{i}",
                    SEGMENT_ATTRIBUTES[i % 3],
                    timezone,
                    "active",
                    "bench",
                    stamp,
                    stamp,
                    stamp,
                    0,
                    "{}",
                )
            )
    row = conn.execute(
        "SELECT min(id), max(id), count(*) FROM subscribers WHERE email_key = ANY(%s)",
        ([f"runner{first}@example.com", f"runner{first + count - 1}@example.com"],),
    ).fetchone()
    lo, hi = int(row[0]), int(row[1])
    if hi - lo + 1 != count:
        raise RuntimeError(f"subscriber ids not contiguous: {lo}..{hi} for {count} rows")
    return lo, hi


def enroll_ids(conn: Any, lo: int, hi: int, enrolled_at: datetime, due: datetime) -> int:
    """Enroll subscribers ``lo..hi`` (ids) in lower-back-pain with step 0 due at `due`, in one
    INSERT ... SELECT. Returns the rows inserted."""
    cur = conn.execute(
        """
        INSERT INTO enrollments (subscriber_id, campaign_id, state, next_step, next_send_at, enrolled_at, end_reason)
        SELECT id, %(campaign)s, 'active', 0, %(due)s, %(enrolled)s, ''
        FROM subscribers WHERE id BETWEEN %(lo)s AND %(hi)s
        """,
        {"campaign": CAMPAIGN_ID, "due": naive(due), "enrolled": naive(enrolled_at), "lo": lo, "hi": hi},
    )
    return cur.rowcount


# --- exclusive-time profiler -------------------------------------------------------------------


class Buckets:
    """Exclusive wall time per named function, measured with ``time.perf_counter`` wrappers.

    Wrapped functions nest: a parent's time excludes its wrapped children, so the buckets add
    up to the time spent inside the outermost wrapper. SQL statements (SQLAlchemy cursor events)
    are buckets of their own, named after the function that issued them.
    """

    def __init__(self) -> None:
        self.time: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [name, start, child_time]
        self._restore: list[Callable[[], None]] = []

    def _enter(self, name: str) -> None:
        self._stack.append([name, time.perf_counter(), 0.0])

    def _exit(self) -> None:
        name, start, child = self._stack.pop()
        elapsed = time.perf_counter() - start
        self.time[name] += elapsed - child
        self.calls[name] += 1
        if self._stack:
            self._stack[-1][2] += elapsed

    def current(self) -> str:
        return self._stack[-1][0] if self._stack else "(outside)"

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._enter(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self._exit()

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def patch(self, owner: Any, attr: str, name: str | None = None, *, optional: bool = False) -> None:
        """Replace ``owner.attr`` by a timed wrapper (undone by :meth:`unpatch`). With
        `optional`, a missing attribute is skipped: the send path is being reshaped while these
        benchmarks run, and a function that no longer exists simply has no bucket."""
        if optional and not hasattr(owner, attr):
            return
        original = getattr(owner, attr)
        had_own = isinstance(owner, type) or attr in getattr(owner, "__dict__", {})
        setattr(owner, attr, self.wrap(name or attr, original))

        def restore() -> None:
            if had_own or not hasattr(owner, "__dict__"):
                setattr(owner, attr, original)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(owner, attr)

        self._restore.append(restore)

    def patch_transaction(self, module: Any) -> None:
        """Time the COMMIT of ``module.transaction(...)`` blocks as bucket ``commit``."""
        if not hasattr(module, "transaction"):
            return
        original = module.transaction

        @contextmanager
        def timed_transaction(url: str) -> Iterator[Any]:
            cm = original(url)
            session = cm.__enter__()
            try:
                yield session
            except BaseException:
                if not cm.__exit__(*sys.exc_info()):
                    raise
            else:
                self._enter("commit")
                try:
                    cm.__exit__(None, None, None)
                finally:
                    self._exit()

        module.transaction = timed_transaction
        self._restore.append(lambda: setattr(module, "transaction", original))

    def watch_sql(self, engine: Any) -> None:
        """Every statement becomes a bucket ``SQL in <caller>``."""
        from sqlalchemy import event

        def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
            self._enter(f"SQL in {self.current()}")

        def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
            self._exit()

        def on_error(context: Any) -> None:
            if self._stack and self._stack[-1][0].startswith("SQL in "):
                self._exit()

        # The DBAPI COMMIT (WAL flush to disk with synchronous_commit=on) and the pool's
        # pre-ping (pool_pre_ping=True: one SELECT 1 per connection checkout) are not cursor
        # executes; time them at the dialect.
        self.patch(engine.dialect, "do_commit", "COMMIT (round trip + WAL fsync)")
        self.patch(engine.dialect, "do_ping", "pool pre-ping (SELECT 1 per checkout)")
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        event.listen(engine, "handle_error", on_error)

        def restore() -> None:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "after_cursor_execute", after)
            event.remove(engine, "handle_error", on_error)

        self._restore.append(restore)

    def unpatch(self) -> None:
        while self._restore:
            self._restore.pop()()

    def sql_statements(self) -> int:
        return sum(c for name, c in self.calls.items() if name.startswith("SQL in "))


# --- reporting -------------------------------------------------------------------------------


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info(pg_url: str | None = None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    packages = []
    for name in ("celery", "kombu", "redis", "SQLAlchemy", "psycopg", "Jinja2"):
        with contextlib.suppress(PackageNotFoundError):
            packages.append(f"{name} {version(name)}")
    pg_version = "?"
    pg_url = pg_url or PG_ADMIN
    if pg_url:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(pg_url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                pg_version = str(row[0]) if row else "?"
    redis_version = "?"
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_HOST + "/0", socket_connect_timeout=2)
        redis_version = str(client.info("server").get("redis_version", "?"))
        client.close()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": redis_version,
        "smtp-sink": "postfix " + (_run(["postconf", "-h", "mail_version"]) or "?"),
        "packages": ", ".join(packages),
        "commit": source_state(),
    }


def note_source_change(info: dict[str, str]) -> None:
    """Flag in `info` that src/ changed while the benchmark ran (processes started before kept
    the code they had imported)."""
    now = source_state()
    if now != info["commit"]:
        info["commit"] += f" at the start; src/ changed during the run (now {now})"
        log(f"warning: src/ changed during the run: {info['commit']}")


def source_state() -> str:
    """The commit, plus the files under src/ that differ from it (other engineers work in this
    tree while the benchmarks run)."""
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"]).splitlines()
    if not dirty:
        return commit
    return f"{commit} + uncommitted changes in " + ", ".join(line[3:] for line in dirty)


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in info.items())


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def write_section(name: str, body: str) -> None:
    """Replace (or append) this benchmark's section of docs/performance.md."""
    path = perfdoc.write_section(name, body)
    log(f"wrote {path.relative_to(ROOT)} ({name})")


# --- tick instrumentation (both scripts) ---------------------------------------------------------

TICK_LABELS = [
    ("try_tick_lock", "advisory lock (Python)"),
    ("SQL in try_tick_lock", "advisory lock: SELECT pg_try_advisory_xact_lock"),
    ("claim_and_create_ledger_rows", "claim + ledger rows + enqueue stamp, one statement (Python)"),
    (
        "SQL in claim_and_create_ledger_rows",
        "claim + ledger rows + enqueue stamp: WITH ... FOR UPDATE SKIP LOCKED, INSERT, UPDATE (PostgreSQL)",
    ),
    ("claim_due_enrollments", "claim: build query, load rows (Python)"),
    ("SQL in claim_due_enrollments", "claim: SELECT ... FOR UPDATE SKIP LOCKED (partial index)"),
    ("_create_deliveries", "ledger: build rows, set next_send_at=NULL (Python)"),
    ("SQL in _create_deliveries", "ledger: INSERT deliveries ... ON CONFLICT DO NOTHING"),
    ("create_ledger_rows", "ledger: build statements (Python)"),
    ("SQL in create_ledger_rows", "ledger: INSERT ... SELECT ON CONFLICT DO NOTHING + UPDATE enrollments"),
    ("deliveries_to_enqueue", "to-enqueue: Python (and the autoflush of ORM-claimed enrollments, if any)"),
    (
        "SQL in deliveries_to_enqueue",
        "to-enqueue (retries, lost tasks; on SQLite the new rows): SELECT ids FOR UPDATE + UPDATE enqueued_at",
    ),
    ("commit", "commit: flush (Python)"),
    ("SQL in commit", "commit: statements flushed at commit"),
    ("COMMIT (round trip + WAL fsync)", "commit: COMMIT round trip (+ WAL fsync if synchronous_commit=on)"),
    ("pool pre-ping (SELECT 1 per checkout)", "pool pre-ping (SELECT 1)"),
]


def instrument_tick(buckets: Buckets, database_url: str) -> None:
    """Time engine.tick's parts (exclusive) into `buckets`; undo with ``buckets.unpatch()``."""
    from cadence.db import queries
    from cadence.db.session import engine_for
    from cadence.operations import enrollment as engine

    for name in (
        "try_tick_lock",
        "claim_and_create_ledger_rows",
        "claim_due_enrollments",
        "create_ledger_rows",
        "deliveries_to_enqueue",
    ):
        buckets.patch(queries, name, optional=True)
    buckets.patch(engine, "_create_deliveries", optional=True)
    buckets.patch_transaction(engine)
    buckets.watch_sql(engine_for(database_url))


def tick_rows(buckets: Buckets, total_s: float, per: int, unit: str = "µs per due row") -> list[list[str]]:
    """Markdown rows (label, total ms, µs per row, share) for an instrumented tick."""
    known = dict(TICK_LABELS)
    names = [n for n, _ in TICK_LABELS] + sorted(set(buckets.time) - set(known))
    rows = []
    accounted = 0.0
    for name in names:
        seconds = buckets.time.get(name, 0.0)
        if not seconds:
            continue
        accounted += seconds
        rows.append(
            [known.get(name, name), f"{seconds * 1e3:.0f}", f"{seconds / per * 1e6:.1f}", f"{seconds / total_s:.0%}"]
        )
    rest = total_s - accounted
    rows.append(
        ["other (sessions, batching ids)", f"{rest * 1e3:.0f}", f"{rest / per * 1e6:.1f}", f"{rest / total_s:.0%}"]
    )
    rows.append(["**total**", f"**{total_s * 1e3:.0f}**", f"**{total_s / per * 1e6:.1f}**", "100 %"])
    return rows


# --- where the machine's CPU went ----------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSnapshot:
    wall: float
    busy: float  # machine-wide busy CPU seconds (/proc/stat)
    procs: dict[int, tuple[str, int, float]]  # pid -> (comm, process group, CPU seconds)


def cpu_snapshot() -> CpuSnapshot:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    busy = (user + nice + system + irq + softirq + steal) / _TICK
    procs: dict[int, tuple[str, int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        procs[int(entry.name)] = (comm, int(rest[2]), (int(rest[11]) + int(rest[12])) / _TICK)
    return CpuSnapshot(time.perf_counter(), busy, procs)


def cpu_usage(
    before: CpuSnapshot,
    after: CpuSnapshot,
    classify: Callable[[int, str, int], str | None],
    extra: dict[str, float] | None = None,
) -> tuple[float, dict[str, float]]:
    """(wall seconds, CPU seconds per label) between two snapshots; processes `classify` maps to
    None are not listed, `extra` adds CPU seconds measured otherwise (processes that exited), and
    ``other processes`` is the machine's busy time nobody listed used."""
    usage: dict[str, float] = defaultdict(float, extra or {})
    for pid, (comm, pgid, secs) in after.procs.items():
        label = classify(pid, comm, pgid)
        if label is None:
            continue
        old = before.procs.get(pid)
        usage[label] += secs - (old[2] if old and old[0] == comm else 0.0)
    usage["other processes (not this benchmark)"] = max(0.0, after.busy - before.busy - sum(usage.values()))
    return after.wall - before.wall, dict(usage)


def cpu_rows(wall: float, usage: dict[str, float]) -> list[list[str]]:
    """Markdown rows: label, CPU seconds, share of the machine (nproc x wall)."""
    capacity = wall * (os.cpu_count() or 1)
    ordered = sorted(usage.items(), key=lambda item: (item[0].startswith("other processes"), -item[1]))
    rows = [[label, f"{secs:.1f}", f"{secs / capacity:.0%}"] for label, secs in ordered if secs >= 0.05]
    idle = capacity - sum(usage.values())
    rows.append(["idle", f"{max(0.0, idle):.1f}", f"{max(0.0, idle) / capacity:.0%}"])
    rows.append([f"**capacity ({os.cpu_count()} CPUs x {wall:.1f} s)**", f"{capacity:.1f}", "100 %"])
    return rows
