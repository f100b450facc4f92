"""Campaign files: the real one loads; every kind of mistake names the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cadence.errors import CampaignError, NotFound
from cadence.files.campaigns import find_campaign, load_campaign

ROOT = Path(__file__).resolve().parents[1]
GOOD = yaml.safe_load((ROOT / "campaigns" / "lower-back-pain.yaml").read_text())
# The same campaign written with a plain first-match segment list instead of facets.
SEGMENTED = {k: v for k, v in GOOD.items() if k != "facets"} | {
    "segments": [
        {"id": "trail", "name": "Trail runners", "rules": [{"attribute": "terrain", "op": "eq", "value": "trails"}]},
        {"id": "everyday", "name": "Everyone else", "fallback": True},
    ]
}


def write(tmp_path: Path, data: object, name: str = "c.yaml") -> Path:
    """The campaign file `name` in `tmp_path`, beside a copy of the clinic's sender file (the
    name and postal address every email carries)."""
    if not (tmp_path / "sender.yaml").exists():
        shutil.copy(ROOT / "campaigns" / "sender.yaml", tmp_path)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_the_lower_back_pain_campaign_loads_with_its_templates() -> None:
    campaign = find_campaign("lower-back-pain", ROOT / "campaigns", ROOT / "templates")
    assert [f.id for f in campaign.facets] == ["terrain", "race"]
    assert [s.id for s in campaign.segments] == [
        "trail+race-soon", "trail+race", "trail+no-race", "everyday+race-soon", "everyday+race", "everyday+no-race",
    ]  # fmt: skip
    assert campaign.segment("trail+race-soon").name == "Trail runners · race within 8 weeks"
    assert campaign.segment("trail+race").context == {"terrain": "trail", "race": "race"}
    assert len(campaign.steps) == 8
    assert campaign.segments[-1].fallback
    assert campaign.exit_goal is not None and campaign.exit_goal.tags == ("booked",)


def test_a_campaign_may_still_list_plain_segments(tmp_path: Path) -> None:
    campaign = load_campaign(write(tmp_path, SEGMENTED))
    assert [s.id for s in campaign.segments] == ["trail", "everyday"]
    assert campaign.facets == ()


def _options(d: dict, facet: int) -> list:  # type: ignore[type-arg]
    return d["facets"][facet]["options"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone: Value error, 'Mars/Olympus' is not an IANA time zone"),
        (lambda d: d["steps"][2].update(delay="3 days"), "steps.2.delay"),
        (lambda d: d["sender"].update(email="not-an-address"), "sender.email"),
        (lambda d: d["send_window"].update(start="7am"), "send_window.start"),
        (lambda d: d["send_window"].update(weekdays=["funday"]), "send_window.weekdays"),
        (lambda d: _options(d, 0)[0]["rules"][0].update(op="like"), "facets.0.options.0.rules.0.op"),
        (
            lambda d: _options(d, 0)[1].update(fallback=False, rules=[{"attribute": "x", "op": "truthy"}]),
            "facets.0: Value error, facet 'terrain': the last option must be the fallback",
        ),
        (
            lambda d: _options(d, 1)[1].update(rules=[]),
            "facet 'race': option 'race' has no rules; only the last may be the fallback",
        ),
        (
            lambda d: _options(d, 1)[0]["rules"][1].update(value="soon"),
            "facets.1.options.0.rules.1: Value error, op 'within_weeks' needs a number of weeks above 0, got 'soon'",
        ),
        (lambda d: d["facets"][0].update(id="name"), "facets.0.id: Value error, facet id 'name' is reserved"),
        (lambda d: _options(d, 1).insert(0, dict(_options(d, 0)[0])), "duplicate facet option id(s): trail"),
        (lambda d: d.update(segments=SEGMENTED["segments"]), "segments and facets: give one or the other"),
        (lambda d: d.pop("facets"), "segments or facets: a campaign needs one of them"),
        (
            lambda d: d["facets"].append(
                {
                    "id": "pace",
                    "options": [
                        {"id": f"p{i}", "name": "P", "rules": [{"attribute": "p", "op": "eq", "value": i}]}
                        for i in range(2)
                    ]
                    + [{"id": "any", "name": "Any", "fallback": True}],
                }
            ),
            "facets: 18 combinations of options, over 12",
        ),
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


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["segments"][0]["rules"][0].update(op="like"), "segments.0.rules.0.op"),
        (lambda d: d["segments"].pop(), "the last segment must be a fallback"),
    ],
)
def test_a_bad_segment_list_names_the_field(tmp_path: Path, change: object, expected: str) -> None:
    data = yaml.safe_load(yaml.safe_dump(SEGMENTED))
    change(data)  # type: ignore[operator]
    with pytest.raises(CampaignError, match=expected):
        load_campaign(write(tmp_path, data))


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


def test_a_campaign_without_a_sender_file_is_refused_naming_it(tmp_path: Path) -> None:
    """No sender file and no postal address of its own: an error when the file loads (the
    campaign is held and says why), not a render failure for every email."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(CampaignError, match=r"sender\.yaml: no sender file: .*postal address"):
        load_campaign(path)
