"""With a shared broker, the confirmation email of a web signup is sent by a real Celery worker,
not by the web process: ``cadence web`` queues the ledger row and a send task after the
request's commit (issue 12). The single-machine default (the web sends it itself) is what every
other web test runs on."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cadence.db.models import Delivery
from cadence.db.session import transaction
from tests.support.cluster import processes
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, csrf_token, find_url, parse, signup_form


def test_with_a_shared_broker_a_worker_sends_the_confirmation(tmp_path: Path, redis_url: str) -> None:
    with (
        SmtpSink() as sink,
        WebServer(tmp_path, sink, extra_env={"CADENCE_BROKER_URL": redis_url}) as web,
        processes(tmp_path / "logs") as procs,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CADENCE_")} | web.env
        procs.worker(env, concurrency=1)
        client = web.client()
        token = csrf_token(client.get("/subscribe").text)
        client.post("/subscribe", data={"csrf_token": token, **signup_form(email="w@example.com")})
        message = parse(sink.wait_for(1, timeout=30)[0])
        assert find_url(message, "/confirm/").startswith(web.base_url)
        # The server has the email; the worker records it once the server's answer is in (a
        # moment later): wait for the row, not for a fixed time.
        deadline = time.monotonic() + 30
        while True:
            with transaction(web.settings.database_url) as session:
                [row] = session.query(Delivery).all()
                seen = (row.kind, row.state, row.message_id)
            if seen[1] == "sent" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert seen == ("transactional", "sent", message["Message-ID"])
        while "batch of 1: 1 sent" not in (tmp_path / "logs" / "worker.log").read_text():
            assert time.monotonic() < deadline, procs.logs()
            time.sleep(0.1)
