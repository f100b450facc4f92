"""A private PostgreSQL server for tests that stop and restart it (never the machine's shared one).

``initdb`` of a fresh cluster in a temporary folder, listening on 127.0.0.1 and a free port, with
trust authentication. PostgreSQL refuses to run as root, so as root the binaries run as the
``postgres`` OS user (``runuser -u postgres --``). Usage::

    with PrivateServer() as pg:
        url = pg.url                 # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        pg.restart(mode="immediate") # like a crash: no shutdown checkpoint, recovery on start

Without the binaries (Debian's ``postgresql``) the test fails under CI=true and skips elsewhere.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.services import unavailable
from tests.support.web import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return Path(found[-1]) if found and Path(found[-1], "initdb").exists() else None


def _can_run_as_postgres() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None


class PrivateServer:
    """A PostgreSQL cluster of the test's own; see the module docstring."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._bin = _bin_dir()
        self._root = Path(tempfile.mkdtemp(prefix="cadence-pg-"))
        self._data = self._root / "data"
        self._log = self._root / "server.log"

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        assert self._bin is not None
        command = [str(self._bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed:\n{done.stdout}\n{done.stderr}\n{self.log()}")

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-4000:] if self._log.exists() else ""

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self._root}"
        self._run("pg_ctl", "-D", str(self._data), "-l", str(self._log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, *, mode: str = "immediate", down_for: float = 1.0) -> None:
        """Stop (``immediate``: the server processes quit at once, as in a crash), wait, start."""
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> PrivateServer:
        if self._bin is None or (os.geteuid() == 0 and not _can_run_as_postgres()):
            shutil.rmtree(self._root, ignore_errors=True)
            unavailable("PostgreSQL's server binaries", "apt-get install postgresql (initdb, pg_ctl, user postgres)")
        if os.geteuid() == 0:
            shutil.chown(self._root, "postgres")
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)
