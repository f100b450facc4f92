"""`cadence subscribers import` for real exports: streamed in chunks, all or nothing or
--skip-invalid with an error report, header aliases, delimiters, BOM, every bad byte by line
and column, and an upsert that tells created, updated, unchanged and suppressed apart."""

from __future__ import annotations

import csv
import io
import os
import random
import string
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from email_validator import validate_email
from sqlalchemy import func, select

from cadence.core.subscriber_csv import SeenAddresses, column_key
from cadence.core.subscriber_fields import _plain_address, normalise_email
from cadence.db.migrate import upgrade
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.errors import InputError
from cadence.operations.subscriber_import import ImportRejected, import_csv
from cadence.operations.subscribers import suppress, unsubscribe
from tests.support.cluster import cadence_env
from tests.support.keys import TEST_KEYS

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
CADENCE = str(Path(sys.executable).with_name("cadence"))


@pytest.fixture
def db(database_url: str) -> str:
    upgrade(database_url)
    return database_url


def write(tmp_path: Path, data: str | bytes, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def people(url: str) -> dict[str, Subscriber]:
    with transaction(url) as session:
        return {s.email_key: s for s in session.scalars(select(Subscriber))}


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_a_mailchimp_export_with_semicolons_a_bom_and_aliased_headers_imports(db: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\ufeffEmail Address;First Name;Time Zone;Training for race;Last Name\r\n"
        "Ann@Example.com;Ann;Europe/London;yes;Smith\r\n"
        'bob@example.com;"Bob; Jr";;no;\r\n',
    )
    report = import_csv(db, path, NOW, keys=TEST_KEYS)
    assert (report.rows, report.created, report.committed) == (2, 2, True)
    ann, bob = people(db)["ann@example.com"], people(db)["bob@example.com"]
    assert (ann.email, ann.first_name, ann.timezone) == ("Ann@example.com", "Ann", "Europe/London")
    assert ann.attributes == {"training_for_race": "yes", "last_name": "Smith"}
    assert (bob.first_name, bob.attributes) == ("Bob; Jr", {"training_for_race": "no"})


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [("E-mail,Name,TZ", ","), ("email\tfirst_name\ttimezone", "\t"), ("EMAIL;firstname;time_zone", ";")],
)
def test_header_aliases_and_delimiters_are_recognised(db: str, tmp_path: Path, header: str, delimiter: str) -> None:
    row = delimiter.join(["cy@example.com", "Cy", "America/Chicago"])
    import_csv(db, write(tmp_path, f"{header}\n{row}\n"), NOW, keys=TEST_KEYS)
    cy = people(db)["cy@example.com"]
    assert (cy.first_name, cy.timezone, cy.attributes) == ("Cy", "America/Chicago", {})


def test_every_bad_byte_is_reported_by_line_and_column_in_one_pass(db: str, tmp_path: Path) -> None:
    data = (
        b"email,first_name,city\n"
        b"ok@example.com,Ok,Richmond\n"
        b"jose@example.com,Jos\xe9,Sevilla\n"  # Latin-1 e-acute: column 21
        b"ren@example.com,Ren\xe9e,Br\xfcssel\n"  # two on one line: columns 20 and 25
        b'multi@example.com,"Two\nLines \x80",x\n'  # a quoted field over two lines: line 6, column 7
    )
    errors = tmp_path / "errors.csv"
    with pytest.raises(ImportRejected) as rejected:
        import_csv(db, write(tmp_path, data), NOW, keys=TEST_KEYS, error_report=errors)
    message = str(rejected.value)
    assert "people.csv: line 3: first_name: byte 0xE9 at column 21 is not UTF-8" in message
    assert "people.csv: line 4: first_name: byte 0xE9 at column 20 is not UTF-8" in message
    assert "people.csv: line 4: city: byte 0xFC at column 25 is not UTF-8" in message
    assert "people.csv: line 6: first_name: byte 0x80 at column 7 is not UTF-8" in message
    assert "3 of 4 rows have problems: nothing was imported" in message
    # One row per rejected record, its own columns first (the bad bytes as readable letters, not
    # U+FFFD), then the reasons: fix the rows there and import that file again.
    rows = report_rows(errors)
    assert [(r["email"], r["first_name"], r["city"]) for r in rows] == [
        ("jose@example.com", "José", "Sevilla"),
        ("ren@example.com", "Renée", "Brüssel"),
        ("multi@example.com", "Two\nLines €", "x"),
    ]
    assert rows[1]["error"].startswith(
        "line 4: first_name: byte 0xE9 at column 20 is not UTF-8 (save the file as CSV UTF-8); "
        "line 4: city: byte 0xFC at column 25 is not UTF-8"
    )
    assert "shown here as Windows-1252 letters" in rows[0]["error"]
    assert "\ufffd" not in errors.read_text(encoding="utf-8-sig")
    assert people(db) == {}


BAD_FILE = (
    "email,first_name,timezone,terrain\n"
    "ok@example.com,Ok,,roads\n"  # line 2
    "not-an-email,X,,roads\n"  # line 3
    "tz@example.com,T,Mars/Base,roads\n"  # line 4
    "OK@example.com,Again,,roads\n"  # line 5: the same address as line 2
    "extra@example.com,E,,roads,surplus\n"  # line 6
    ",NoEmail,,trails\n"  # line 7
    "fine@example.com,Fine,America/New_York,trails\n"  # line 8
)


def test_all_or_nothing_writes_nothing_even_after_earlier_chunks_were_stored(db: str, tmp_path: Path) -> None:
    with pytest.raises(ImportRejected) as rejected:
        import_csv(
            db, write(tmp_path, BAD_FILE), NOW, keys=TEST_KEYS, chunk_size=1
        )  # line 2 is stored, then rolled back
    message = str(rejected.value)
    for expected in (
        "line 3: email: 'not-an-email' is not a valid email address",
        "line 4: timezone: 'Mars/Base' is not an IANA time zone",
        "line 5: email: OK@example.com already on line 2",
        "line 6: more fields than the header has (5 for 4)",
        "line 7: email: empty",
    ):
        assert f"people.csv: {expected}" in message
    assert rejected.value.report.rejected == 5
    assert people(db) == {}


def test_skip_invalid_loads_the_valid_rows_and_reports_every_bad_one(db: str, tmp_path: Path) -> None:
    errors = tmp_path / "people.errors.csv"
    report = import_csv(
        db, write(tmp_path, BAD_FILE), NOW, keys=TEST_KEYS, skip_invalid=True, error_report=errors, chunk_size=2
    )
    assert (report.rows, report.created, report.rejected, report.committed) == (7, 2, 5, True)
    assert set(people(db)) == {"ok@example.com", "fine@example.com"}
    assert people(db)["ok@example.com"].first_name == "Ok"  # the first of the duplicates counts
    rows = report_rows(errors)
    assert list(rows[0]) == ["email", "first_name", "timezone", "terrain", "error"]  # the file's columns + error
    assert [r["error"].split(":")[0] for r in rows] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    assert rows[1] == {
        "email": "tz@example.com", "first_name": "T", "timezone": "Mars/Base", "terrain": "roads",
        "error": "line 4: timezone: 'Mars/Base' is not an IANA time zone such as America/New_York",
    }
    assert rows[2]["error"] == "line 5: email: OK@example.com already on line 2"
    assert rows[3]["error"].endswith("(the extra fields were: surplus)")

    # Fixed in the report and imported again: the error column is skipped, not an attribute.
    fixed = errors.read_text(encoding="utf-8-sig").replace("Mars/Base", "Europe/Paris")
    again = import_csv(db, write(tmp_path, fixed), NOW, keys=TEST_KEYS, skip_invalid=True)
    assert again.created == 2  # tz@ and extra@ (its surplus field is named in the error, not kept)
    assert people(db)["tz@example.com"].attributes == {"terrain": "roads"}


def test_the_upsert_counts_created_updated_unchanged_and_names_suppressed_addresses(db: str, tmp_path: Path) -> None:
    first = "email,first_name,terrain\nann@example.com,Ann,roads\nbob@example.com,Bob,trails\nleft@example.com,L,\n"
    import_csv(db, write(tmp_path, first), NOW, keys=TEST_KEYS)
    with transaction(db) as session:
        suppress(session, "Gone@Example.com", "hard_bounce", NOW)
        left = session.scalar(select(Subscriber).where(Subscriber.email_key == "left@example.com"))
        assert left is not None
        unsubscribe(session, left, NOW, "test")
    second = (
        "email,first_name,terrain\n"
        "ann@example.com,Ann,roads\n"  # unchanged
        "bob@example.com,,track\n"  # updated (an empty name keeps the stored one)
        "left@example.com,L,\n"  # unchanged, and still unsubscribed
        "gone@example.com,G,\n"  # suppressed
        "new@example.com,N,\n"  # created
    )
    report = import_csv(db, write(tmp_path, second), NOW, keys=TEST_KEYS)
    assert (report.created, report.updated, report.unchanged, report.suppressed) == (1, 1, 2, 1)
    assert report.suppressed_addresses == ["gone@example.com"]
    stored = people(db)
    assert (stored["bob@example.com"].first_name, stored["bob@example.com"].attributes) == ("Bob", {"terrain": "track"})
    assert stored["left@example.com"].status == "unsubscribed"
    assert "gone@example.com" not in stored


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "line 1: the file is empty"),
        (b"name,tz\nx,y\n", "line 1: the header must have an 'email' column"),
        (b"email,E-mail\na@example.com,b@example.com\n", "line 1: columns 'email' and 'E-mail' both mean email"),
        ("email\na@example.com\n".encode("utf-16"), "the file is UTF-16"),
        (b"em\xe9il\na@example.com\n", "line 1, column 3: byte 0xE9 in the header is not UTF-8"),
    ],
)
def test_a_file_that_is_not_a_subscriber_csv_is_refused_whole(
    db: str, tmp_path: Path, data: bytes, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        import_csv(db, write(tmp_path, data), NOW, keys=TEST_KEYS)


def test_the_cli_imports_all_or_nothing_and_exits_1_listing_the_problems(tmp_path: Path) -> None:
    env = cadence_env(tmp_path / "data", COLUMNS="200")
    assert subprocess.run([CADENCE, "db", "upgrade"], env=env, capture_output=True).returncode == 0
    path = write(tmp_path, BAD_FILE)
    ran = subprocess.run([CADENCE, "subscribers", "import", str(path)], env=env, capture_output=True, text=True)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert "line 4: timezone: 'Mars/Base' is not an IANA time zone" in ran.stderr
    assert "5 of 7 rows have problems: nothing was imported" in ran.stderr
    assert "nothing was imported" in ran.stdout and "\x1b[" not in ran.stdout  # no progress bar off a terminal

    ran = subprocess.run(
        [CADENCE, "subscribers", "import", str(path), "--skip-invalid"], env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    assert "2 created, 0 updated, 0 unchanged, 0 skipped as suppressed, 5 rejected" in ran.stdout
    assert f"error report: {tmp_path / 'people.errors.csv'}" in ran.stdout
    assert len(report_rows(tmp_path / "people.errors.csv")) == 5


def test_column_names_become_attribute_names_the_way_segment_rules_spell_them() -> None:
    assert column_key(" Training for race ") == "training_for_race"
    assert column_key("E-mail") == "e_mail"
    assert column_key("Prénom") == "prénom"


def test_seen_addresses_finds_every_repeat_across_growth() -> None:
    seen = SeenAddresses(capacity=4)
    assert all(seen.first_line(f"p{i}@example.com", i) is None for i in range(5000))
    assert seen.first_line("p4321@example.com", 9999) == 4321
    assert seen.first_line("p0@example.com", 9999) == 0


def test_the_fast_address_check_agrees_with_email_validator() -> None:
    rng = random.Random(13)
    domains = ["Example.COM", "a.b", "xn--bcher-kva.example", "x.test", "localhost", "ex..com", "-a.com", "1.2.3.4"]
    agreed = 0
    for _ in range(5000):
        local = "".join(rng.choice(string.ascii_letters + string.digits + ".-_+!#'") for _ in range(rng.randint(1, 12)))
        address = f"{local}@{rng.choice(domains)}"
        fast = _plain_address(address)
        try:
            slow: str | None = validate_email(address, check_deliverability=False).normalized
        except Exception:
            slow = None
        if fast is not None:
            agreed += 1
            assert fast == slow == normalise_email(address), address
    assert agreed > 500


def test_memory_stays_bounded_per_chunk_not_per_file(db: str, tmp_path: Path) -> None:
    """A functional check of the streaming path (the 1M-row peak RSS is measured in bench/)."""
    buffer = io.StringIO()
    buffer.write("email,first_name\n")
    for i in range(3000):
        buffer.write(f"r{i}@example.com,R{i}\n")
    seen: list[int] = []
    report = import_csv(
        db, write(tmp_path, buffer.getvalue()), NOW, keys=TEST_KEYS, chunk_size=500,
        on_progress=lambda r, b: seen.append(r)
    )
    assert report.created == 3000 and seen[:3] == [500, 1000, 1500] and seen[-1] == 3000
    with transaction(db) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 3000


def test_on_a_terminal_the_cli_shows_a_progress_bar_with_rows_per_second(tmp_path: Path) -> None:
    env = cadence_env(tmp_path / "data", COLUMNS="120", TERM="xterm")
    assert subprocess.run([CADENCE, "db", "upgrade"], env=env, capture_output=True).returncode == 0
    path = write(tmp_path, "email\n" + "".join(f"t{i}@example.com\n" for i in range(2500)))
    leader, follower = os.openpty()
    with os.fdopen(leader, "rb", buffering=0) as terminal:
        proc = subprocess.Popen(
            [CADENCE, "subscribers", "import", str(path)], env=env, stdout=follower, stderr=follower
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = terminal.read(65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=120) == 0
    shown = b"".join(chunks).decode("utf-8", "replace")
    assert "importing" in shown and "rows/s" in shown
    assert "2,500" in shown and "created" in shown


def test_the_error_report_never_overwrites_the_file_being_imported(db: str, tmp_path: Path) -> None:
    path = write(tmp_path, BAD_FILE)
    with pytest.raises(InputError, match="would overwrite the file being imported"):
        import_csv(db, path, NOW, keys=TEST_KEYS, skip_invalid=True, error_report=tmp_path / "." / "people.csv")
    assert path.read_text() == BAD_FILE
