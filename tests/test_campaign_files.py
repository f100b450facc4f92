"""Campaign files: the real one loads; every kind of mistake names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cadence.campaign_files import find_campaign, load_campaign
from cadence.errors import CampaignError, NotFound

ROOT = Path(__file__).resolve().parents[1]
GOOD = yaml.safe_load((ROOT / "campaigns" / "lower-back-pain.yaml").read_text())


def write(tmp_path: Path, data: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_the_lower_back_pain_campaign_loads_with_its_templates() -> None:
    campaign = find_campaign("lower-back-pain", ROOT / "campaigns", ROOT / "templates")
    assert [s.id for s in campaign.segments] == ["trail", "race", "everyday"]
    assert len(campaign.steps) == 6
    assert campaign.segments[-1].fallback
    assert "booked" in campaign.exit_goals


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone: Value error, 'Mars/Olympus' is not an IANA time zone"),
        (lambda d: d["steps"][2].update(delay="3 days"), "steps.2.delay"),
        (lambda d: d["sender"].update(email="not-an-address"), "sender.email"),
        (lambda d: d["send_window"].update(start="7am"), "send_window.start"),
        (lambda d: d["send_window"].update(weekdays=["funday"]), "send_window.weekdays"),
        (lambda d: d["segments"][0]["rules"][0].update(op="like"), "segments.0.rules.0.op"),
        (lambda d: d["segments"].pop(), "the last segment must be a fallback"),
        (lambda d: d["steps"].append(dict(d["steps"][0])), "duplicate step id(s): why-it-hurts"),
        (lambda d: d.pop("sender"), "sender: Field required"),
        (lambda d: d.update(colour="blue"), "colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_campaign_file_names_the_file_and_the_field(tmp_path: Path, change: object, expected: str) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    change(data)  # type: ignore[operator]
    path = write(tmp_path, data)
    with pytest.raises(CampaignError) as err:
        load_campaign(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "id: x\nname: [unclosed\nsender: {}\n")
    with pytest.raises(CampaignError, match=r"c\.yaml:\d+: not valid YAML"):
        load_campaign(path)


def test_an_unknown_template_is_refused_when_templates_are_checked(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["steps"][1]["template"] = "lower-back-pain/99-missing.mjml"
    path = write(tmp_path, data)
    with pytest.raises(CampaignError, match=r"steps\.1\.template: no template 'lower-back-pain/99-missing\.mjml'"):
        load_campaign(path, ROOT / "templates")


def test_an_unknown_campaign_name_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no campaign 'nope'"):
        find_campaign("nope", tmp_path)
    with pytest.raises(NotFound):
        find_campaign("../../etc/passwd", tmp_path)
