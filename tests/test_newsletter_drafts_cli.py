"""``cadence newsletters drafts ...`` through the installed command: save (create, then a new
version), a stale version and a wrong field as one error line with exit status 1, history, and a
stored newsletter scheduled and followed by the usual ``cadence newsletters`` commands by name."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import cadence, one_error_line
from tests.test_newsletters_cli import deliveries, env, sink  # noqa: F401 - the module's fixtures

FIELDS = """based_on: lower-back-pain
subject: April at the clinic
preheader: New evening hours, and a short routine for stiff hips after long runs.
body: |
  ## Evening hours

  We now open until **8 pm** on Thursdays.
send_at: now
"""


def test_a_stored_newsletter_saved_versioned_and_scheduled_from_the_command_line(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    fields = tmp_path / "april.yaml"
    fields.write_text(FIELDS)
    saved = cadence(env, "newsletters", "drafts", "save", "april-cli", str(fields))
    assert saved.status == 0 and "version 1" in saved.out and "audience" in saved.out, saved

    fields.write_text(FIELDS + "audience:\n  topics: [clinic-news]\n  rules: [{attribute: terrain, op: like}]\n")
    bad = cadence(env, "newsletters", "drafts", "save", "april-cli", str(fields), "--version", "1")
    assert bad.status == 1 and "audience.rules.0.op" in one_error_line(bad)
    fields.write_text(FIELDS + "audience:\n  topics: [clinic-news]\n")
    assert cadence(env, "newsletters", "drafts", "save", "april-cli", str(fields), "--version", "1").status == 0
    stale = cadence(env, "newsletters", "drafts", "save", "april-cli", str(fields), "--version", "1")
    assert stale.status == 1 and "is at version 2, not 1" in one_error_line(stale)
    missing = cadence(env, "newsletters", "drafts", "save", "x", str(tmp_path / "nope.yaml"))
    assert missing.status == 1 and "no such file" in one_error_line(missing)

    history = json.loads(cadence(env, "newsletters", "drafts", "history", "april-cli", "--json").out)
    assert [v["version"] for v in history] == [2, 1]
    listed = cadence(env, "newsletters", "drafts", "list").out
    assert "april-cli" in listed and "yes" in listed

    before = deliveries(env)
    scheduled = cadence(env, "newsletters", "schedule", "april-cli")
    assert scheduled.status == 0, scheduled
    assert deliveries(env) == before + 4  # the four readers of the clinic news
    shown = json.loads(cadence(env, "newsletters", "drafts", "show", "april-cli").out)
    assert (shown["state"], shown["locked"]) == ("scheduled", True)
    locked = cadence(env, "newsletters", "drafts", "delete", "april-cli", "--version", "2")
    assert locked.status == 1 and "is scheduled" in one_error_line(locked)


def test_scheduling_without_a_send_time_asks_for_one_and_sends_nothing(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    # A marketer's trial: a draft with no send_at, scheduled with no --at, went out at once.
    fields = tmp_path / "untimed.yaml"
    fields.write_text(FIELDS.replace("send_at: now\n", "") + "audience:\n  topics: [clinic-news]\n")
    assert cadence(env, "newsletters", "drafts", "save", "untimed", str(fields)).status == 0
    before = deliveries(env)
    refused = cadence(env, "newsletters", "schedule", "untimed")
    assert refused.status == 1 and "no send time" in one_error_line(refused) and "--at" in refused.err
    assert deliveries(env) == before
    assert cadence(env, "newsletters", "schedule", "untimed", "--at", "now").status == 0
    assert deliveries(env) == before + 4
def test_a_wrong_shape_says_what_to_write_not_a_class_name(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A marketer's first try (a list of segments, no based_on) is told the shape to write, with
    an example, and not pydantic's "instance of _SegmentsModel" (found by trying it cold)."""
    fields = tmp_path / "race.yaml"
    fields.write_text(
        "subject: Race prep\npreheader: Taper week\nbody: Time to **taper**.\n"
        "audience:\n  topics: [clinic-news]\n  segments: [trail+race, everyday+race]\n"
    )
    bad = cadence(env, "newsletters", "drafts", "save", "race-cli", str(fields))
    line = one_error_line(bad)
    assert bad.status == 1, bad
    assert "based_on: required" in line and "based_on: lower-back-pain" in line, line
    assert "audience.segments: expected" in line and "include: [" in line, line
    assert "_SegmentsModel" not in line and "Field required" not in line, line
    assert cadence(env, "newsletters", "drafts", "show", "race-cli").status == 1  # nothing saved


def test_the_readme_file_of_fields_saves_as_written(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The README's example of a file of fields (For marketing staff, 5.) is the one a marketer
    copies: it saves, ready to schedule, for the race trainees."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("e.g. `race-news.yaml`:\n\n```yaml\n") + len("e.g. `race-news.yaml`:\n\n```yaml\n")
    fields = tmp_path / "race-news.yaml"
    fields.write_text(readme[start : readme.index("```", start)])
    saved = cadence(env, "newsletters", "drafts", "save", "race-news", str(fields))
    assert saved.status == 0, saved
    shown = json.loads(cadence(env, "newsletters", "drafts", "show", "race-news").out)
    assert shown["missing"] == [], shown
    assert shown["fields"]["audience"]["segments"]["include"][0] == "trail+race-soon"
