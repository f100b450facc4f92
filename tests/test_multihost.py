"""Workers on three "machines" (network namespaces with their own addresses, joined to this
box's PostgreSQL and Redis over virtual ethernet): kill -9 one host's worker mid-send, and the
others finish the send with nothing lost and duplicates only within the documented window (one
group per sending thread of the dead worker, same Message-ID). tests/support/multihost.py holds
the scenario; bench/multihost.py runs it bigger and records the numbers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.multihost import missing_tools, run_multihost
from tests.support.services import postgres_database

pytestmark = pytest.mark.slow
N = 400


def test_other_hosts_finish_a_send_when_one_host_dies(tmp_path: Path, redis_url: str) -> None:
    missing = missing_tools()
    if missing:
        message = "needs " + ", ".join(missing) + " (apt-get install iproute2 socat; run as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)

    with postgres_database() as database_url:
        run = run_multihost(tmp_path, database_url, redis_url, n=N, hosts=3, concurrency=2, kill_after=0.25)

    assert run.leftovers == [], "the namespaces, links or bridge outlived the run"
    assert run.killed_host_sent > 0 and run.killed_at < N, "the kill must land mid-send"
    assert set(run.per_host) == {"h1", "h2", "h3"}, run.per_host  # every host sent, over its own address
    assert run.sent_rows == N and run.other_rows == {}, (run.sent_rows, run.other_rows, run.logs)
    assert run.recipients == N, "someone never got the email"
    assert len(run.duplicates) <= run.window, run.duplicates
    assert run.same_message_id, "a duplicate must carry the same Message-ID as the first copy"
