"""The JSON API: a round trip through every action, then schemathesis against /openapi.json (no
5xx, every response matches the documented schema), bounded to keep it under a minute."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from cadence.core.tokens import make_token
from tests.support.smtpd import SmtpSink
from tests.support.web import CONSENT, SECRET, WebServer, find_url, fresh_ip, parse

EXAMPLES_PER_OPERATION = 15


def signup(**fields: Any) -> dict[str, Any]:
    return {
        "email": "api.runner@example.com",
        "terrain": "treadmill",
        "training_for_race": True,
        "race_month": "2027-05",
        "consent_version": CONSENT.version,
        **fields,
    }


def test_the_api_signs_up_confirms_and_manages_preferences(web: WebServer, web_sink: SmtpSink) -> None:
    api = httpx.Client(base_url=web.url("/api"), headers=web.from_ip(), timeout=10)
    consent = api.get("/consent").json()
    assert consent == {"version": CONSENT.version, "text": CONSENT.text}
    response = api.post("/subscribe", json=signup(page_url="https://clinic.example/course"))
    assert response.status_code == 202 and response.json()["status"] == "pending_confirmation"
    token = find_url(parse(web_sink.wait_for(1)[-1]), "/confirm/").rsplit("/", 1)[1]
    assert api.post(f"/confirm/{token}").json() == {"status": "confirmed", "detail": ""}
    assert api.post(f"/confirm/{token}").json()["status"] == "already"
    subscriber = web.subscriber("api.runner@example.com")
    assert subscriber is not None and subscriber.consent["form_id"] == "api:subscribe"
    assert subscriber.consent["page_url"] == "https://clinic.example/course"

    assert web.drive() == 1
    email = parse(web_sink.wait_for(2)[-1])
    preferences = find_url(email, "/p/").rsplit("/", 1)[1]
    got = api.get(f"/preferences/{preferences}").json()
    assert got["status"] == "active" and got["answers"]["terrain"] == "treadmill"
    put = api.put(f"/preferences/{preferences}", json={"terrain": "trails", "training_for_race": False})
    assert put.json()["answers"] == {"terrain": "trails", "training_for_race": False, "race_month": None}
    assert api.post(f"/preferences/{preferences}/pause", json={"weeks": 8}).json()["paused_until"]
    assert api.post(f"/preferences/{preferences}/pause", json={"weeks": 3}).status_code == 422
    assert api.delete(f"/preferences/{preferences}/pause").json()["paused_until"] is None
    unsubscribe = find_url(email, "/u/").rsplit("/", 1)[1]
    assert api.post(f"/unsubscribe/{unsubscribe}").json()["status"] == "unsubscribed"
    # Export and erase take a data link emailed to the address on file, each link once.
    assert api.get(f"/preferences/{preferences}/export").status_code in (404, 405)
    assert api.delete(f"/preferences/{preferences}").status_code in (404, 405)
    assert api.post(f"/preferences/{preferences}/data-link").status_code == 202
    data = find_url(parse(web_sink.wait_for(3)[-1]), "/d/").rsplit("/", 1)[1]
    assert api.post(f"/data/{data}/export").json()["profile"]["status"] == "unsubscribed"
    assert api.post(f"/data/{data}/export").status_code == 404  # spent
    assert api.delete(f"/data/{data}").status_code == 404
    assert api.post(f"/preferences/{preferences}/data-link").status_code == 202
    data = find_url(parse(web_sink.wait_for(4)[-1]), "/d/").rsplit("/", 1)[1]
    assert api.delete(f"/data/{data}").json()["status"] == "erased"
    assert api.get(f"/preferences/{preferences}").status_code == 404
    assert web.subscriber("api.runner@example.com") is None


def test_the_api_refuses_what_a_cross_site_form_could_send(web: WebServer) -> None:
    body = '{"email": "x@example.com", "terrain": "trails", "training_for_race": false}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**web.from_ip(), **({"Content-Type": content_type} if content_type else {})}
        response = httpx.post(web.url("/api/subscribe"), content=body, headers=headers)
        assert response.status_code == 422, content_type
    assert web.subscriber("x@example.com") is None


def test_the_api_answers_alike_for_known_and_unknown_addresses(web: WebServer) -> None:
    web.add_delivery("known.api@example.com")
    answers = [
        httpx.post(web.url("/api/subscribe"), json=signup(email=address), headers=web.from_ip())
        for address in ("known.api@example.com", "unknown.api@example.com")
    ]
    assert answers[0].status_code == answers[1].status_code == 202
    assert answers[0].content == answers[1].content


def test_the_api_never_fails_and_always_matches_its_schema(web: WebServer) -> None:
    """Every /api operation, EXAMPLES_PER_OPERATION generated cases each for positive and for
    negative data, from a fixed seed. Checks: no 5xx, documented status codes, content types, headers and
    bodies that validate against the schema. (Driven by hand rather than ``@schema.parametrize``:
    schemathesis' lazy pytest fixture does not work with pytest 9.)"""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(web.url("/openapi.json")).include(path_regex="^/api/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    statuses: Counter[int] = Counter()
    subscriber_id, delivery_id, _ = web.add_delivery("fuzzed@example.com")
    real_tokens = {
        "/api/preferences/": make_token(SECRET, "preferences", subscriber_id),
        "/api/unsubscribe/": make_token(SECRET, "unsubscribe", [subscriber_id, delivery_id]),
    }
    runs: list[tuple[Any, GenerationMode, dict[str, str] | None]] = []
    for operation in operations:
        runs += [(operation, GenerationMode.POSITIVE, None), (operation, GenerationMode.NEGATIVE, None)]
        for prefix, token in real_tokens.items():
            if operation.path.startswith(prefix):  # the same operations with a token that works
                runs.append((operation, GenerationMode.POSITIVE, {"token": token}))
    # Erasing with the real token ends the subscriber, so it goes last.
    runs.sort(key=lambda run: run[2] is not None and run[0].method.upper() == "DELETE" and "pause" not in run[0].path)

    for operation, mode, path_parameters in runs:

        @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def exercise(case: Any) -> None:
            response = case.call_and_validate(headers={"X-Forwarded-For": fresh_ip()}, checks=checks)
            statuses[response.status_code] += 1

        try:
            exercise()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid data
    print(sorted(statuses.items()))
    # Signups, real tokens at work, unknown tokens, bad data: every kind of answer was exercised.
    assert statuses[202] and statuses[200] > 10 and statuses[404] and statuses[422]
    assert "Traceback" not in web.log()
