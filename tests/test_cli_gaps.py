"""Small CLI gaps of issue 13 item 7, through the installed command: `subscribers import --json`
(a summary a script can read, also when nothing was imported), `worker --help` and
`scheduler --help` in plain words, and `cadence report` without a name listing what there is to
report on (exit 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cluster import cadence_env
from tests.test_cli import cadence, one_error_line

JARGON = ("celery", "beat", "tick", "ledger", "lease", "broker", "batch", "enqueue")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = cadence_env(tmp_path_factory.mktemp("cli-gaps") / "data", COLUMNS="100")
    assert cadence(env, "db", "upgrade").status == 0
    return env


def test_import_json_is_a_summary_a_script_can_read(env: dict[str, str], tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text(
        "Email Address;First Name;Terrain;Runs on hills\na@example.com;Ann;trails;yes\nb@example.com;;roads;no\n"
    )
    ran = cadence(env, "subscribers", "import", str(people), "--json")
    assert ran.status == 0, ran
    summary = json.loads(ran.out)  # nothing but the JSON on stdout
    assert (summary["imported"], summary["rows"], summary["created"], summary["rejected"]) == (True, 2, 2, 0)
    assert summary["problems"] == [] and summary["error_report"] is None
    [course] = [c for c in summary["columns"] if c["campaign"] == "lower-back-pain"]
    assert ["Terrain", "terrain"] in course["read"]
    assert any(u["column"] == "Runs on hills" for u in course["unused"])  # a column no segment reads

    again = json.loads(cadence(env, "subscribers", "import", str(people), "--json").out)
    assert (again["created"], again["unchanged"]) == (0, 2)


def test_import_json_of_a_refused_file_says_why_and_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("email,timezone\nok@example.com,\nnot-an-address,\nz@example.com,Mars/Base\n")
    ran = cadence(env, "subscribers", "import", str(bad), "--json")
    assert ran.status == 1
    summary = json.loads(ran.out)
    assert summary["imported"] is False and summary["rejected"] == 2 and summary["created"] == 0
    assert [(p["line"], p["field"]) for p in summary["problems"]] == [(3, "email"), (4, "timezone")]
    assert "2 of 3 rows have problems: nothing was imported" in one_error_line(ran)
    found = cadence(env, "subscribers", "search", "ok@example.com", "--json")
    assert json.loads(found.out)["subscribers"] == []  # all or nothing


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_worker_and_scheduler_help_speak_plainly(command: str) -> None:
    ran = cadence(cadence_env(Path("/nonexistent")), command, "--help")
    assert ran.status == 0
    said = re.sub(r"CADENCE_[A-Z_]+", "", " ".join(ran.out.split())).lower()  # a setting's name may say "tick"
    assert [word for word in JARGON if word in said] == []
    assert "nothing" in said  # what a second one, or a stopped one, costs: nothing lost or sent twice


def test_report_without_a_name_lists_what_there_is_to_report_on(env: dict[str, str]) -> None:
    ran = cadence(env, "report")
    assert ran.status == 2
    line = one_error_line(ran)
    assert "lower-back-pain" in line and "clinic-news-2027-01" in line
