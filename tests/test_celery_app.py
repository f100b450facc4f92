"""The Celery app is built by a function from a settings object, never at import (issue 12),
and ``celery -A cadence.tasks`` still finds it with Cadence's tasks registered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cadence.config import load_settings
from cadence.tasks import SEND_BATCH, TICK, make_celery
from tests.support.cluster import cadence_env


def test_each_settings_object_gets_its_own_app_with_both_tasks(tmp_path: Path) -> None:
    fast = load_settings(cadence_env(tmp_path / "a", CADENCE_TICK_SECONDS="5"))
    slow = load_settings(
        cadence_env(tmp_path / "b", CADENCE_BROKER_URL="redis://127.0.0.1:6379/9", CADENCE_TICK_SECONDS="60")
    )
    apps = [make_celery(fast), make_celery(slow)]
    try:
        for app in apps:
            assert {TICK, SEND_BATCH} <= set(app.tasks)
        assert apps[0].conf.beat_schedule["cadence-tick"]["schedule"] == 5.0
        assert apps[1].conf.beat_schedule["cadence-tick"]["schedule"] == 60.0
        assert apps[1].conf.broker_url == "redis://127.0.0.1:6379/9"
        assert apps[1].conf.broker_transport_options["visibility_timeout"] >= 3600
        # Not shared through Celery's global task list: each app's tick enqueues through itself.
        assert apps[0].tasks[TICK] is not apps[1].tasks[TICK]
    finally:
        for app in apps:
            app.close()


def test_importing_the_tasks_module_reads_no_settings(tmp_path: Path) -> None:
    # A broker URL the settings refuse: importing must not care, building the app must say so.
    env = cadence_env(tmp_path / "data", CADENCE_BROKER_URL="carrier-pigeon://coop")
    imported = subprocess.run(
        [sys.executable, "-c", "import cadence.tasks"], env=env, capture_output=True, text=True, check=False
    )
    assert imported.returncode == 0, imported.stderr
    built = subprocess.run(
        [sys.executable, "-c", "from cadence.tasks import app"], env=env, capture_output=True, text=True, check=False
    )
    assert built.returncode != 0 and "CADENCE_BROKER_URL" in built.stderr


def test_celery_dash_a_finds_the_app_with_the_tasks_and_the_tick_schedule(tmp_path: Path) -> None:
    env = cadence_env(tmp_path / "data", CADENCE_TICK_SECONDS="7")
    celery = Path(sys.executable).parent / "celery"
    report = subprocess.run(
        [str(celery), "-A", "cadence.tasks", "report"], env=env, capture_output=True, text=True, check=False
    )
    assert report.returncode == 0, report.stderr
    assert "'task': 'cadence.tick'" in report.stdout and "'schedule': 7.0" in report.stdout
    listed = subprocess.run(
        [sys.executable, "-c", "from cadence.tasks import app; print(sorted(app.tasks))"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert TICK in listed.stdout and SEND_BATCH in listed.stdout
