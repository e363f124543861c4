"""Every command writes through report/publish.py and the output contract: `hardware compare` too — it
refuses to overwrite a user's file, lists what it wrote, and re-runs over its own results."""
from __future__ import annotations

import json

import pandas as pd

from conftest import QUICKSTART
from moe2sim.experiments.run import run_scenario
from moe2sim.hardware.cli import main as hardware
from moe2sim.report.publish import COMPARE_FILES
from moe2sim.scenario import load_scenario


def test_compare_writes_through_the_output_contract(tmp_path, capsys):
    sim = tmp_path / "sim"
    run_scenario(load_scenario(QUICKSTART, ["queries=40"]), sim, progress=False)
    out = tmp_path / "compare"
    out.mkdir()
    (out / "compare.csv").write_text("my own table\n")
    assert hardware(["compare", str(sim), str(sim), "--out", str(out)]) == 2  # a folder moe2sim did not write
    assert hardware(["compare", str(sim), str(sim), "--out", str(out), "--allow-existing"]) == 2  # a user's file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--allow-existing" in err[0] and "will not be overwritten" in err[1]
    assert (out / "compare.csv").read_text() == "my own table\n"
    assert not (out / "report.html").exists()

    fresh = tmp_path / "fresh"
    for _ in range(2):  # the second run replaces its own results
        assert hardware(["compare", str(sim), str(sim), "--out", str(fresh)]) == 0
    assert set(json.loads((fresh / ".moe2sim-manifest.json").read_text())["files"]) == set(COMPARE_FILES)
    table = pd.read_csv(fresh / "compare.csv")
    overall = table[table["level"] == "all"].iloc[0]
    assert overall["latency_mean_err_pct"] == 0  # the same records on both sides
    assert json.loads((fresh / "compare.json").read_text())["failures"]["failed_queries"] == 0
    assert "<img alt=" in (fresh / "report.html").read_text()
