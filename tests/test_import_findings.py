"""The import summary names the columns the campaigns' segment rules read, and warns about the
ones they do not: a `Runs on trails` column would put everyone in the fallback segment."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cadence.config import load_settings
from cadence.core.column_findings import column_findings
from cadence.db.migrate import upgrade
from cadence.files.catalog import CampaignCatalog
from tests.support.cluster import ROOT, cadence_env
from tests.test_cli import CADENCE

LBP = CampaignCatalog(ROOT / "campaigns", ROOT / "templates").get("lower-back-pain")


def test_a_column_the_rules_do_not_read_gets_a_did_you_mean_from_the_rule_values() -> None:
    names = ["Email Address", "Runs on trails", "Training for race", "Race month", "Shoe size", "terain"]
    fields = ["email", "runs_on_trails", "training_for_race", "race_month", "shoe_size", "terain"]
    [found] = column_findings(names, fields, [LBP])
    assert found.read == [("Training for race", "training_for_race"), ("Race month", "race_month")]
    unused = {u.column: u for u in found.unused}
    assert unused["Runs on trails"].suggestion is not None
    assert (unused["Runs on trails"].suggestion.attribute, unused["Runs on trails"].suggestion.rule) == (
        "terrain",
        "terrain eq trails",
    )
    assert unused["terain"].suggestion is not None and unused["terain"].suggestion.attribute == "terrain"  # a typo
    assert unused["Shoe size"].suggestion is None
    assert [(m.attribute, m.fallback) for m in found.missing] == [
        ("terrain", "'Road, path and treadmill runners' (of terrain)")
    ]


def test_the_import_summary_calls_out_the_column_that_lands_everyone_in_the_fallback(tmp_path: Path) -> None:
    env = cadence_env(tmp_path / "data", COLUMNS="250")
    upgrade(load_settings(env).database_url)
    path = tmp_path / "runners.csv"
    path.write_text("Email Address,First Name,Runs on trails,Training for race\nann@example.com,Ann,yes,no\n")
    ran = subprocess.run([CADENCE, "subscribers", "import", str(path)], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert "lower-back-pain: its segments read 'Training for race' (training_for_race)" in ran.stdout
    assert (
        "warning: column 'Runs on trails' (runs_on_trails) is not read by any segment of lower-back-pain: "
        "did you mean 'terrain'? (the segment rule terrain eq trails). As it is, everyone in this file lands "
        "in the fallback" in ran.stdout
    )
    assert "no column gives 'terrain'" in ran.stdout
