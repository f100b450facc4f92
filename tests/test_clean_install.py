"""A plain, non-editable ``pip install .`` WITHOUT the test extras runs in production (issue #9).

The test extras happen to pull in packages the runtime needs too (kombu's Redis transport needs
``packaging``), and an editable install reads templates straight from the source tree, so the
rest of the suite cannot see a missing runtime dependency or a package file left out of the
wheel. This test builds a clean virtual environment, installs a copy of the project into it
(no extras), and from that install runs the worker, the scheduler (Redis broker, PostgreSQL
database) until an email reaches a real SMTP server, and ``cadence web`` until it serves a
page and its stylesheet. pip's cache keeps it to a few tens of seconds after the first run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cadence.clock import FileClock
from tests.support.cluster import ROOT, cadence_env, processes
from tests.support.services import postgres_database
from tests.support.smtpd import SmtpSink
from tests.support.web import free_port

pytestmark = pytest.mark.slow

START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window


def _copy_project(dest: Path) -> Path:
    """What a release contains, without caches or build leftovers (pip builds in the tree)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _clean_env() -> dict[str, str]:
    """The caller's environment without anything that would let the venv see the test install."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def clean_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install .`` (no extras, not editable); returns its bin/ folder."""
    base = tmp_path_factory.mktemp("clean-install")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env(), cwd=base)
    source = _copy_project(base / "source")
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(source)],
        env=_clean_env(),
        cwd=base,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, f"pip install . failed:\n{install.stdout}\n{install.stderr}"
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "show", "-f", "cadence"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages" in listing and "Editable project location" not in listing, listing
    return venv / "bin"


def test_every_file_under_the_package_is_in_the_installed_package(clean_install: Path) -> None:
    """Any non-Python file added under src/cadence must be listed in the package data."""
    program = (
        "import importlib.resources as r, pathlib, sys;"
        "root = pathlib.Path(str(r.files('cadence')));"
        "print(root); print('\\n'.join(sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.is_file())))"
    )
    out = subprocess.run(
        [str(clean_install / "python"), "-c", program], env=_clean_env(), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    installed_root, installed = Path(out[0]), set(out[1:])
    assert not str(installed_root).startswith(str(ROOT)), "the venv imported the source tree, not the install"
    source = ROOT / "src" / "cadence"
    expected = {
        str(p.relative_to(source))
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc",)
    }
    assert expected - installed == set()


def test_a_plain_install_runs_worker_scheduler_and_web(clean_install: Path, tmp_path: Path, redis_url: str) -> None:
    cadence = [str(clean_install / "cadence")]
    clock = FileClock(tmp_path / "clock")
    clock.set(START)
    with postgres_database() as database_url, SmtpSink() as sink, processes(tmp_path / "logs") as procs:
        env = {
            **_clean_env(),
            **cadence_env(
                tmp_path / "data",
                CADENCE_DATABASE_URL=database_url,
                CADENCE_BROKER_URL=redis_url,
                CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
                CADENCE_CLOCK=str(clock),
                CADENCE_TICK_SECONDS="0.5",
            ),
        }
        for args in (
            ["db", "upgrade"],
            ["subscribers", "add", "plain@example.com", "--name", "Pat", "--tz", "America/New_York"],
            ["campaigns", "enroll", "lower-back-pain", "--all"],
        ):
            done = subprocess.run([*cadence, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"cadence {' '.join(args)}:\n{done.stdout}\n{done.stderr}"

        worker = procs.start("worker", ["worker", "--concurrency", "1"], env, program=cadence, cwd=tmp_path)
        scheduler = procs.start("scheduler", ["scheduler"], env, program=cadence, cwd=tmp_path)
        try:
            [received] = sink.wait_for(1, timeout=90)
        except Exception:
            pytest.fail(f"no email from the clean install's worker and scheduler:\n{procs.logs()}")
        assert received.rcpt_tos == ("plain@example.com",)
        assert worker.poll() is None and scheduler.poll() is None, procs.logs()

        port = free_port()
        web_args = ["web", "--port", str(port), "--log-level", "warning"]
        web = procs.start("web", web_args, env, program=cadence, cwd=tmp_path)
        page = css = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and web.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/subscribe", timeout=2)
                css = httpx.get(f"http://127.0.0.1:{port}/static/cadence.css", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert page is not None and css is not None, f"cadence web never answered:\n{procs.logs()}"
        assert page.status_code == 200, page.text
        assert "<form" in page.text
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        console = httpx.get(f"http://127.0.0.1:{port}/admin/login", timeout=5)  # its templates are in the wheel
        assert console.status_code == 200 and "Log in" in console.text, console.text
