"""Issue 10, part 5: what an erase leaves is a keyed, versioned hash; an erased person comes back
only by their own confirmed signup (with a new consent record); bounces and complaints go on
blocking; a staff import (the real ``cadence`` command) still refuses erased addresses. Also
part 4 at the CLI door: invisible characters in a CSV name the line, field and code point."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from cadence.core.subscriber_fields import SubscriberInput, email_hash
from cadence.core.suppression_keys import PLAIN, SuppressionKeys
from cadence.db.migrate import upgrade
from cadence.db.models import Subscriber, Suppression
from cadence.db.session import transaction
from cadence.operations.privacy import erase
from cadence.operations.signup import Answers, SignupContext, SignupData, confirm, read_confirmation_token, sign_up
from cadence.operations.subscribers import find_suppression, import_subscribers, is_suppressed, suppress
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, csrf_token, data_link, find_url, parse, signup_form, subscribe_and_confirm

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
SECRET = "erase-tests-secret-0123456789"
KEYS = SuppressionKeys.from_secrets(SECRET)
WHERE = SignupContext("192.0.2.44", "test", "web:subscribe", "")
CAMPAIGN = None  # enrolment is not what these tests are about


def add(db: str, address: str) -> Subscriber:
    with transaction(db) as session:
        import_subscribers(session, [SubscriberInput(address, "Pat")], NOW, keys=KEYS)
        found = session.scalar(select(Subscriber).where(Subscriber.email_key == address.lower()))
        assert found is not None
        return found


def erase_address(db: str, address: str, keys: SuppressionKeys = KEYS) -> None:
    with transaction(db) as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == address.lower()))
        assert subscriber is not None
        erase(session, subscriber, NOW, keys)


def rows(db: str) -> list[tuple[str, str, str]]:
    with transaction(db) as session:
        return [(r.email_hash, r.hash_version, r.reason) for r in session.scalars(select(Suppression))]


def sign_up_and_confirm(db: str, address: str, at: datetime, keys: SuppressionKeys = KEYS) -> bool:
    data = SignupData(address, "Pat", Answers(terrain="roads", training_for_race=False))
    with transaction(db) as session:
        confirmation = sign_up(session, data, WHERE, at, secret_key=SECRET, keys=keys)
    if confirmation is None:
        return False
    with transaction(db) as session:
        payload = read_confirmation_token(SECRET, confirmation.token, at)
        confirm(session, payload, at, ip="192.0.2.45", user_agent="test", campaign=CAMPAIGN, keys=keys)
    return True


def test_an_erase_leaves_only_a_keyed_hash_that_a_plain_hash_cannot_find(database_url: str) -> None:
    upgrade(database_url)
    add(database_url, "Keyed@Example.com")
    erase_address(database_url, "Keyed@Example.com")
    [(digest, version, reason)] = rows(database_url)
    assert reason == "erased" and version == KEYS.current.version and version.startswith("hmac-sha256:")
    assert digest != email_hash("keyed@example.com")
    with transaction(database_url) as session:
        assert not is_suppressed(session, "keyed@example.com")  # a dictionary of plain hashes finds nothing
        assert is_suppressed(session, "KEYED@example.com", KEYS)
        assert not is_suppressed(session, "keyed@example.com", SuppressionKeys.from_secrets("another-secret-000000"))
        result = import_subscribers(session, [SubscriberInput("keyed@example.com")], NOW, keys=KEYS)
    assert (result.created, result.suppressed) == (0, 1)


def test_a_rotated_secret_still_finds_old_rows_and_rekeys_them_on_sight(database_url: str) -> None:
    upgrade(database_url)
    add(database_url, "rotate@example.com")
    erase_address(database_url, "rotate@example.com")
    rotated = SuppressionKeys.from_secrets("the-new-secret-0123456789", previous=[SECRET])
    with transaction(database_url) as session:
        assert find_suppression(session, "rotate@example.com", rotated) == "erased"
    [(_, version, _)] = rows(database_url)
    assert version == rotated.current.version != KEYS.current.version
    with transaction(database_url) as session:
        assert is_suppressed(session, "rotate@example.com", SuppressionKeys.from_secrets("the-new-secret-0123456789"))


def test_plain_erase_rows_from_before_keyed_hashes_are_honoured_and_rekeyed(database_url: str) -> None:
    upgrade(database_url)
    with transaction(database_url) as session:
        session.add(
            Suppression(
                email_hash=email_hash("legacy@example.com"),
                hash_version=PLAIN,
                reason="erased",
                detail="",
                created_at=NOW,
            )
        )
    with transaction(database_url) as session:
        result = import_subscribers(session, [SubscriberInput("legacy@example.com")], NOW, keys=KEYS)
    assert result.suppressed == 1
    assert rows(database_url) == [(KEYS.keyed("legacy@example.com")[0], KEYS.current.version, "erased")]
    assert sign_up_and_confirm(database_url, "legacy@example.com", NOW + timedelta(days=1))
    assert rows(database_url) == []


def test_an_erased_person_comes_back_only_by_confirming_with_a_new_consent(database_url: str) -> None:
    upgrade(database_url)
    first = add(database_url, "back@example.com")
    erase_address(database_url, "back@example.com")
    later = NOW + timedelta(days=30)
    data = SignupData("back@example.com", "Pat", Answers(terrain="trails", training_for_race=False))
    with transaction(database_url) as session:
        confirmation = sign_up(session, data, WHERE, later, secret_key=SECRET, keys=KEYS)
    assert confirmation is not None and confirmation.subscriber_id != first.id
    # Signed up but not confirmed: still suppressed, and staff cannot import the address meanwhile.
    with transaction(database_url) as session:
        assert find_suppression(session, "back@example.com", KEYS) == "erased"
        result = import_subscribers(session, [SubscriberInput("back@example.com", "Imported")], later, keys=KEYS)
    assert result.suppressed == 1
    with transaction(database_url) as session:
        payload = read_confirmation_token(SECRET, confirmation.token, later)
        confirm(session, payload, later, ip="192.0.2.45", user_agent="test", campaign=CAMPAIGN, keys=KEYS)
    with transaction(database_url) as session:
        back = session.get(Subscriber, confirmation.subscriber_id)
        assert back is not None and back.status == "active" and back.first_name == "Pat"
        assert back.consent["confirmed_at"] == later.isoformat() and back.consent["signed_up_at"] == later.isoformat()
        assert not is_suppressed(session, "back@example.com", KEYS)


def test_bounce_and_complaint_suppressions_survive_an_erase_and_keep_blocking(database_url: str) -> None:
    upgrade(database_url)
    for address, reason in (("bounced@example.com", "hard_bounce"), ("angry@example.com", "complaint")):
        add(database_url, address)
        with transaction(database_url) as session:
            suppress(session, address, reason, NOW, detail=f"550 5.1.1 <{address}> no such user")
        erase_address(database_url, address)
        assert not sign_up_and_confirm(database_url, address, NOW + timedelta(days=2))
        with transaction(database_url) as session:
            assert find_suppression(session, address, KEYS) == reason
            assert session.scalar(select(Subscriber).where(Subscriber.email_key == address)) is None
    found = rows(database_url)
    assert {r for _, _, r in found} == {"hard_bounce", "complaint"}
    assert all(version == KEYS.current.version for _, version, _ in found)  # no plain hash of them left
    with transaction(database_url) as session:
        assert all(s.detail == "" for s in session.scalars(select(Suppression)))


# ---------------------------------------------------------------------------- the real doors


def cadence(web: WebServer, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("cadence")
    return subprocess.run(
        [str(script), *args], env={**os.environ, **web.env}, capture_output=True, text=True, timeout=120
    )


def test_an_erased_subscriber_signs_up_again_through_the_pages_and_staff_cannot_import_them(
    web: WebServer, web_sink: SmtpSink, tmp_path: Path
) -> None:
    address = "phoenix@example.com"
    preferences = subscribe_and_confirm(web, web_sink, address)
    client = web.client()
    link = data_link(web, web_sink, client, preferences)
    erased = client.post(f"{link}/erase", data={"csrf_token": csrf_token(client.get(link).text), "confirm": "yes"})
    assert erased.status_code == 200 and web.subscriber(address) is None

    csv = tmp_path / "staff.csv"
    csv.write_text(f"email,first_name\n{address},Staff\n")
    imported = cadence(web, "subscribers", "import", str(csv))
    assert imported.returncode == 0, imported.stderr
    assert "1 skipped as suppressed (phoenix@example.com)" in imported.stdout
    assert web.subscriber(address) is None

    before = len(web_sink.messages)
    form = client.get("/subscribe")
    client.post("/subscribe", data={"csrf_token": csrf_token(form.text), **signup_form(email=address)})
    confirm_url = find_url(parse(web_sink.wait_for(before + 1)[-1]), "/confirm/").removeprefix(web.base_url)
    added = cadence(web, "subscribers", "add", address, "--name", "Staff")
    assert added.returncode == 1 and "is suppressed" in added.stderr  # pending is not confirmed
    client.post(confirm_url, data={"csrf_token": csrf_token(client.get(confirm_url).text)}).raise_for_status()
    back = web.subscriber(address)
    assert back is not None and back.status == "active" and back.consent["confirmed_at"] == web.clock.now().isoformat()


def test_the_cli_refuses_invisible_characters_naming_line_field_and_code_point(web: WebServer, tmp_path: Path) -> None:
    csv = tmp_path / "names.csv"
    csv.write_text(
        "email,first_name,note\nok@example.com,Ann,fine\nrlo@example.com,\u202eevil,x\nz@example.com,Zo,a\u200bb\n"
    )
    result = cadence(web, "subscribers", "import", str(csv))
    output = " ".join((result.stdout + result.stderr).split())  # rich wraps long lines
    assert result.returncode == 1 and "Traceback" not in output
    assert "line 3: first_name: contains an invisible formatting character (U+202E)" in output
    assert "line 4: note: contains an invisible formatting character (U+200B)" in output
    assert web.subscriber("ok@example.com") is None  # all or nothing
    added = cadence(web, "subscribers", "add", "nfc.cli@example.com", "--name", "Rene\u0301")
    assert added.returncode == 0, added.stdout + added.stderr
    subscriber = web.subscriber("nfc.cli@example.com")
    assert subscriber is not None and subscriber.first_name == "Ren\u00e9"
    bidi = cadence(web, "subscribers", "add", "bidi.cli@example.com", "--name", "\u2067x")
    assert (
        bidi.returncode == 1
        and "--name: contains an invisible formatting character (U+2067)" in bidi.stdout + bidi.stderr
    )
