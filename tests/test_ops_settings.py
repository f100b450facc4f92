"""Bad operations settings get one clear error naming the variable, through the installed command."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cluster import cadence_env

CADENCE = str(Path(sys.executable).with_name("cadence"))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CADENCE_LOG_FORMAT", "xml", "CADENCE_LOG_FORMAT: 'xml' is not one of text, json"),
        ("CADENCE_METRICS_PORT", "http", "CADENCE_METRICS_PORT: 'http' is not a whole number"),
        ("CADENCE_METRICS_PORT", "70000", "CADENCE_METRICS_PORT: 70000 is not a TCP port (1-65535)"),
        ("CADENCE_DNS_RESOLVER", "127.0.0.1:dns", "CADENCE_DNS_RESOLVER: '127.0.0.1:dns' is not HOST or HOST:PORT"),
    ],
)
def test_a_bad_operations_setting_is_named(tmp_path: Path, variable: str, value: str, message: str) -> None:
    run = subprocess.run(
        [CADENCE, "doctor"], env=cadence_env(tmp_path, **{variable: value}), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_a_worker_whose_metrics_port_is_taken_says_so_and_exits(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cadence_env(tmp_path, CADENCE_METRICS_PORT=str(port), CADENCE_METRICS_HOST="127.0.0.1")
        run = subprocess.run([CADENCE, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert f"CADENCE_METRICS_PORT: cannot listen on 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr
    assert not list((tmp_path / "metrics").glob("worker-*"))  # its metrics folder is gone too
