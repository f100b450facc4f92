"""A private rspamd for tests: Debian's ``rspamd`` with its stock rules, on a free loopback port.

Usage::

    with Rspamd(tmp_path) as filter:
        result = filter.scan(message_bytes, mail_from="care@example.com", rcpt="runner@example.com")
        result.score, result.symbols        # {"URI_COUNT_ODD": Symbol(score=1.0, options=("9",)), ...}

It reads the packaged configuration (``/etc/rspamd``) and overrides, in a ``local.d`` of its own
(``LOCAL_CONFDIR``), only what a test machine without network needs: no DNS (the resolver points
at a closed loopback port, so a lookup fails at once instead of timing out), and the modules that
only ask the network about the sender (RBL/SURBL/DNSWL, SPF, DKIM, DMARC, ARC, ASN, the public
fuzzy storage, rule updates) or need Redis (Bayes, neural, reputation, ratelimit, greylist) are
off, as are hfilter's HELO/hostname/sender checks, which resolve names. What stays is what a
receiving rspamd says about the *content*: MIME structure, headers, HTML, URLs, text.

Each scan passes the SMTP envelope and a plausible connecting client (IP, HELO, reverse DNS) as
rspamd's HTTP protocol headers, as an MTA would, so nothing is scored for a missing envelope.
Compiled Hyperscan databases are kept in the temp dir across runs (``hs_cache_dir``): the first
start takes ~10 s on 2 cores, later ones ~2 s.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import requests

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
CLIENT_IP = "203.0.113.25"  # RFC 5737 TEST-NET-3: public-looking, so not skipped as local
CLIENT_HOST = "mail.precisionbodywork.example"

# Modules that only ask the network (DNS lists, sender authentication, rule updates, remote
# hash storage) or need Redis; none of them looks at what the email says.
NETWORK_MODULES = (
    "rbl", "surbl", "emails", "spf", "dkim", "dmarc", "arc", "asn", "fuzzy_check", "rspamd_update",
    "whitelist", "mx_check", "neural", "reputation", "greylist", "ratelimit", "replies",
    "history_redis", "url_redirector", "phishing", "dkim_signing",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    score: float
    options: tuple[str, ...]
    description: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    score: float
    symbols: dict[str, Symbol]

    def scoring(self) -> list[Symbol]:
        """The symbols that added to the score, worst first."""
        return sorted((s for s in self.symbols.values() if s.score > 0), key=lambda s: -s.score)

    def __str__(self) -> str:
        hits = ", ".join(f"{s.name}({s.score:g}: {','.join(s.options)})" for s in self.scoring())
        return f"{self.score:g} [{hits}]"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rspamd:
    """One rspamd process (main + one normal worker) with a config dir of its own under `tmp`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        local = self.tmp / "local.d"
        for name in ("local.d", "db", "run", "log"):
            (self.tmp / name).mkdir(parents=True, exist_ok=True)
        hs_cache = Path(tempfile.gettempdir()) / f"cadence-test-rspamd-hs-{os.getuid()}"
        hs_cache.mkdir(exist_ok=True)
        (self.tmp / "rspamd.conf").write_text(
            '.include "$CONFDIR/common.conf"\n'
            "options {\n"
            '  pidfile = "$RUNDIR/rspamd.pid";\n'
            '  .include "$CONFDIR/options.inc"\n'
            '  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"\n'
            "}\n"
            'logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }\n'
            f'worker "normal" {{\n  bind_socket = "127.0.0.1:{self.port}";\n'
            '  .include "$CONFDIR/worker-normal.inc"\n  count = 1;\n}\n'
        )
        # rspamd finds URLs in plain text only on a known public suffix, and our test domains use
        # RFC 2606's .example: added to a copy of the list, the text part's links count as they
        # would with the clinic's real domain (else URI_COUNT_ODD would judge the HTML alone).
        suffixes = Path("/usr/share/rspamd/effective_tld_names.dat").read_text(encoding="utf-8")
        (self.tmp / "public_suffixes.dat").write_text(suffixes + "\n// RFC 2606\nexample\n", encoding="utf-8")
        (local / "options.inc").write_text(
            # Port 1 on loopback is closed: every lookup fails at once (no network here).
            'dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }\n'
            'control_socket = "";\n'
            f'hs_cache_dir = "{hs_cache}/";\n'
            f'url_tld = "{self.tmp / "public_suffixes.dat"}";\n'
        )
        for module in NETWORK_MODULES:
            (local / f"{module}.conf").write_text("enabled = false;\n")
        # hfilter's HELO, hostname, sender and recipient checks resolve names; its URL checks stay.
        (local / "hfilter.conf").write_text(
            "helo_enabled = false;\nhostname_enabled = false;\nfrom_enabled = false;\nrcpt_enabled = false;\n"
        )
        return self.tmp / "rspamd.conf"

    def start(self) -> Rspamd:
        config = self._write_config()
        command = [RSPAMD, "--no-fork", "--config", str(config)]
        command += [f"--var={k}={self.tmp / v}" for k, v in (("DBDIR", "db"), ("RUNDIR", "run"), ("LOGDIR", "log"))]
        command.append(f"--var=LOCAL_CONFDIR={self.tmp}")
        if os.geteuid() == 0:
            command.append("--insecure")  # rspamd refuses to run its workers as root otherwise
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90  # a cold Hyperscan compile on a busy 2-core machine
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self.tmp / "log" / "rspamd.log").read_text(errors="replace")[-2000:]
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"rspamd exited with status {self._process.returncode}: {stderr}{log}")
            try:
                if requests.get(f"{self.url}/ping", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rspamd did not answer on {self.url} within 90 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Rspamd:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def scan(self, message: bytes, *, mail_from: str, rcpt: str) -> ScanResult:
        """rspamd's verdict on `message`, delivered by a plausible client to `rcpt`."""
        headers = {
            "IP": CLIENT_IP,
            "Helo": CLIENT_HOST,
            "Hostname": CLIENT_HOST,  # the client's verified reverse DNS, as the MTA would pass it
            "From": mail_from,
            "Rcpt": rcpt,
        }
        response = requests.post(f"{self.url}/checkv2", data=message, headers=headers, timeout=30)
        response.raise_for_status()
        body = response.json()
        symbols = {
            name: Symbol(name, float(s.get("score", 0.0)), tuple(s.get("options", ())), s.get("description", ""))
            for name, s in body.get("symbols", {}).items()
        }
        return ScanResult(float(body["score"]), symbols)


def rspamd_installed() -> bool:
    return Path(RSPAMD).is_file()
