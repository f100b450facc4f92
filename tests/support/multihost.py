"""Workers on separate machines, on one box: Linux network namespaces as hosts (issue 15).

The scenario shared by tests/test_multihost.py (a small send) and bench/multihost.py (a few
thousand emails, numbers in docs/performance.md):

- :class:`HostNetwork` makes a bridge with an address of its own (``10.231.X.1/24``, X chosen
  free) and, per host, a network namespace joined to it by a veth pair, with its own address
  (``10.231.X.11``, ``.12``...). A namespace has its own loopback: a worker there cannot reach
  the 127.0.0.1 services, exactly like a second machine. PostgreSQL and Redis listen on
  127.0.0.1 only, and their configuration is shared by everyone on this box, so instead of
  reconfiguring them the bridge address gets a ``socat`` forwarder per service (the servers see
  a local client; nothing of theirs changes and nothing needs restoring). Everything is torn
  down in ``__exit__``, on failure too: processes first (a namespace is only freed when nothing
  runs in it), then the namespaces (their veth ends go with them), then the bridge.
- :func:`run_multihost` runs ``cadence worker`` in each namespace and ``cadence scheduler`` in
  the last one, all against the same PostgreSQL and Redis; an aiosmtpd recorder on the bridge
  address records every message with the address of the host that sent it; once the first
  host has sent its share it is killed with SIGKILL mid-send; the others must finish: every
  recipient gets the email, and duplicates stay within the window README promises (one group
  per sending thread of the dead worker, the same Message-ID as the first copy).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from sqlalchemy import func, select

from cadence.clock import FileClock
from cadence.db.models import Delivery
from cadence.db.session import transaction
from tests.support.cluster import cadence_env, enrolled_runners
from tests.support.smtpd import SmtpSink

START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window
SERVICES = {"postgresql": 5432, "redis": 6379}


def missing_tools() -> list[str]:
    """What this box lacks to run the scenario (root, ``ip netns``, ``socat``); empty if nothing."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    if shutil.which("ip") is None:
        missing.append("iproute2 (`ip netns`)")
    if shutil.which("socat") is None:
        missing.append("socat")
    return missing


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class HostNetwork:
    """`hosts` network namespaces on a bridge, with forwarders to this box's PostgreSQL and
    Redis on the bridge address. A context manager; see the module docstring."""

    def __init__(self, hosts: int, log_dir: Path) -> None:
        self.tag = secrets.token_hex(2)  # names of our own: other runs may use namespaces too
        self.bridge = f"cmb{self.tag}"
        self.namespaces = [f"cadence-mh-{self.tag}-h{k + 1}" for k in range(hosts)]
        self.subnet = self._free_subnet()
        self.gateway = f"{self.subnet}.1"
        self.addresses = [f"{self.subnet}.{11 + k}" for k in range(hosts)]
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self._forwarders: list[subprocess.Popen[bytes]] = []
        self._made_links: list[str] = []
        self._made_namespaces: list[str] = []

    @staticmethod
    def _free_subnet() -> str:
        used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=False).stdout
        for _ in range(50):
            candidate = f"10.231.{random.randrange(256)}"
            if f"inet {candidate}." not in used:
                return candidate
        raise RuntimeError("no free 10.231.X.0/24 subnet for the bridge")

    def host_of(self, address: str) -> str:
        """`h1`, `h2`... for a host's address; the address itself otherwise."""
        return f"h{self.addresses.index(address) + 1}" if address in self.addresses else address

    def __enter__(self) -> HostNetwork:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.teardown()

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made_links.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for k, (namespace, address) in enumerate(zip(self.namespaces, self.addresses, strict=True)):
            outside, inside = f"cmv{self.tag}{k + 1}", f"cmp{self.tag}{k + 1}"
            _ip("netns", "add", namespace)
            self._made_namespaces.append(namespace)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
            self._made_links.append(outside)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        for name, port in SERVICES.items():
            with open(self.log_dir / f"socat-{name}.log", "ab") as out:
                self._forwarders.append(
                    subprocess.Popen(
                        ["socat", f"TCP-LISTEN:{port},bind={self.gateway},fork,reuseaddr", f"TCP:127.0.0.1:{port}"],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its forked children too, on teardown
                    )
                )
        for port in SERVICES.values():  # reachable from a host, through the bridge and the forwarder
            self.wait_reachable(self.namespaces[-1], self.gateway, port)

    def wait_reachable(self, namespace: str, host: str, port: int, timeout: float = 15.0) -> None:
        probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=2).close()"
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe], capture_output=True)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}:{port} unreachable from {namespace}: {done.stderr.decode()[-500:]}")
            time.sleep(0.2)

    def start(self, host: int, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """``cadence ARGS`` on host `host` (0-based), logging to `name`.log; its own process
        group, so SIGKILL reaches everything it started."""
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.namespaces[host], sys.executable, "-m", "cadence", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def teardown(self) -> None:
        for proc in self.processes + self._forwarders:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes + self._forwarders:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for proc in self._forwarders:  # socat's forked children live in its process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        problems = []
        for namespace in reversed(self._made_namespaces):
            try:
                _ip("netns", "del", namespace)  # its veth end goes, and the pair with it
            except RuntimeError as exc:
                problems.append(str(exc))
        for link in reversed(self._made_links):
            with contextlib.suppress(RuntimeError):  # a veth is already gone with its namespace
                _ip("link", "del", link)
        self._made_namespaces.clear()
        self._made_links.clear()
        if problems:
            raise RuntimeError("teardown: " + "; ".join(problems))

    def leftovers(self) -> list[str]:
        """Our namespaces or links still present (a teardown that missed something)."""
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
        return [ns for ns in self.namespaces if ns in names] + re.findall(rf"\b(cm[bvp]{self.tag}\d*)\b", links)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.log_dir.glob("*.log"))


class _BridgeSink(SmtpSink):
    """The recording SMTP server, on the bridge address instead of loopback."""

    def __init__(self, host: str) -> None:
        self.host = host  # read by SmtpSink.__init__ to bind its socket
        super().__init__()


@dataclass
class MultiHostRun:
    n: int
    hosts: int
    concurrency: int
    commit_every: int
    killed_at: int = 0  # messages the sink had when the first host's worker was killed
    killed_host_sent: int = 0  # of them, from the killed host
    per_host: Counter[str] = field(default_factory=Counter)  # messages received per host
    recipients: int = 0  # distinct recipients who got the email
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # recipient -> Message-IDs
    sent_rows: int = 0
    other_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # from the workers' first message to the last one
    after_kill_seconds: float = 0.0  # from the kill to the last message
    leftovers: list[str] = field(default_factory=list)
    timeline: dict[str, float] = field(default_factory=dict)  # seconds from the start of the run
    logs: str = ""

    @property
    def window(self) -> int:
        """At most this many duplicates (README: one group per sending thread of the dead worker)."""
        return self.concurrency * self.commit_every

    @property
    def same_message_id(self) -> bool:
        return all(len(set(ids)) == 1 for ids in self.duplicates.values())


def run_multihost(
    work: Path,
    database_url: str,
    redis_url: str,
    *,
    n: int,
    hosts: int = 3,
    concurrency: int = 2,
    kill_after: float = 0.3,
    lease_seconds: int = 3,
    batch_size: int = 40,
    timeout: float = 120.0,
) -> MultiHostRun:
    """Send step 1 to `n` runners from `hosts` hosts; SIGKILL host 1's worker once the sink has
    ``kill_after * n`` messages (and host 1 sent some); wait until every delivery is sent.

    `database_url` and `redis_url` are this box's (127.0.0.1): the hosts get the same with the
    bridge address."""
    began = time.monotonic()
    marks: dict[str, float] = {}
    with HostNetwork(hosts, work / "logs") as net:
        marks["network up"] = time.monotonic() - began
        bridged_db = database_url.replace("127.0.0.1", net.gateway).replace("localhost", net.gateway)
        bridged_redis = redis_url.replace("127.0.0.1", net.gateway).replace("localhost", net.gateway)
        with _BridgeSink(net.gateway) as sink:
            clock = FileClock(work / "clock")
            clock.set(START)
            common = {
                "CADENCE_CLOCK": str(clock),
                "CADENCE_BATCH_SIZE": str(batch_size),
                "CADENCE_LEASE_SECONDS": str(lease_seconds),
                "CADENCE_TICK_SECONDS": "0.5",
            }
            local = cadence_env(work / "data", CADENCE_DATABASE_URL=database_url, **common)
            settings = enrolled_runners(local, n, START, prefix="r")
            run = MultiHostRun(n, hosts, concurrency, settings.commit_every)
            marks["subscribers enrolled"] = time.monotonic() - began
            remote = cadence_env(
                work / "data",
                CADENCE_DATABASE_URL=bridged_db,
                CADENCE_BROKER_URL=bridged_redis,
                CADENCE_EMAIL_URL=f"smtp://{net.gateway}:{sink.port}?tls=none",
                **common,
            )
            workers = [
                net.start(k, f"worker-h{k + 1}", ["worker", "--concurrency", str(concurrency), "--loglevel", "INFO"],
                          remote)
                for k in range(hosts)
            ]  # fmt: skip
            net.start(hosts - 1, f"scheduler-h{hosts}", ["scheduler", "--loglevel", "INFO"], remote)

            # Kill host 1 once the send is well under way and host 1 has sent its part of it.
            first_host = net.addresses[0]
            deadline = time.monotonic() + timeout
            while True:
                received = sink.messages
                from_first = sum(1 for m in received if m.peer == first_host)
                if len(received) >= kill_after * n and from_first > 0:
                    break
                if time.monotonic() > deadline or any(p.poll() is not None for p in workers):
                    run.logs = net.logs()
                    raise RuntimeError(f"no send under way after {timeout:.0f}s ({len(received)} received)")
                time.sleep(0.02)
            marks["first message"] = (received[0].received_at if received else time.monotonic()) - began
            os.killpg(workers[0].pid, signal.SIGKILL)
            killed = time.monotonic()
            marks["h1 killed"] = killed - began
            workers[0].wait(timeout=10)
            run.killed_at = len(sink.messages)
            run.killed_host_sent = sum(1 for m in sink.messages if m.peer == first_host)

            while True:
                with transaction(settings.database_url) as session:
                    counts = dict(session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())
                if counts.get("sent", 0) + counts.get("failed", 0) + counts.get("skipped", 0) >= n:
                    break
                if time.monotonic() > deadline + timeout:
                    run.logs = net.logs()
                    raise RuntimeError(f"the other hosts did not finish: {counts}")
                time.sleep(0.25)
            marks["every row sent"] = time.monotonic() - began
            time.sleep(0.5)  # a straggler duplicate still on the wire
            messages = sink.messages
            run.logs = net.logs()
    run.leftovers = net.leftovers()  # after the teardown: nothing of ours may be left
    marks["torn down"] = time.monotonic() - began
    run.timeline = marks

    run.sent_rows = int(counts.pop("sent", 0))
    run.other_rows = {state: int(c) for state, c in counts.items()}
    per_recipient: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        run.per_host[net.host_of(message.peer)] += 1
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        per_recipient[message.rcpt_tos[0]].append(str(parsed["Message-ID"]))
    run.recipients = len(per_recipient)
    run.duplicates = {rcpt: ids for rcpt, ids in per_recipient.items() if len(ids) > 1}
    run.seconds = messages[-1].received_at - messages[0].started_at
    run.after_kill_seconds = messages[-1].received_at - killed
    return run
