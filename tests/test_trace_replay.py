"""Real workload traces replayed: each request's arrival time, prompt tokens and output tokens reach the
per-query records exactly — the bundled slice of the Azure LLM inference trace 2023 (code service) and a
file in moe2sim's own columns — and a malformed trace is one line naming the file and column."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from moe2sim.cli import main
from moe2sim.data.bundled import bundled_path

AZURE_SLICE = bundled_path("traces") / "workloads" / "azure_llm_2023_code_first500.csv"
SCENARIO = bundled_path("scenarios") / "azure_code.yaml"


def run(capsys, scenario, out, *sets: str) -> tuple[int, str]:
    code = main(["run", str(scenario), "--out", str(out), "--quiet", *[a for s in sets for a in ("--set", s)]])
    return code, capsys.readouterr().err


def records(out) -> pd.DataFrame:
    return pd.read_parquet(out / "queries.parquet").sort_values("query_id").reset_index(drop=True)


def test_azure_slice_is_replayed_exactly(tmp_path, capsys):
    code, err = run(capsys, SCENARIO, tmp_path / "out", "queries=200", "outputs.report=false")
    assert code == 0, err
    trace = pd.read_csv(AZURE_SLICE).head(200)
    stamps = pd.to_datetime(trace["TIMESTAMP"])
    q = records(tmp_path / "out")
    np.testing.assert_array_equal(q["arrival_s"], (stamps - stamps[0]).dt.total_seconds())
    np.testing.assert_array_equal(q["prompt_tokens"], trace["ContextTokens"])
    np.testing.assert_array_equal(q["output_tokens"], trace["GeneratedTokens"])
    assert set(q["category"].astype(str)) == {"humaneval"}


def own_columns_scenario(tmp_path, arrivals: pd.DataFrame, **replay) -> str:
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["categories"].append({"name": "gsm8k", "mix": 1.0, "latency_budget_s": 6.0,
                              "output_tokens": {"dist": "lognormal", "mean": 150, "cv": 0.4}})
    raw["queries"] = len(arrivals)
    raw["outputs"] = {"report": False}
    arrivals.to_csv(tmp_path / "arrivals.csv", index=False)
    raw["arrivals"] = {"process": "replay", "file": str(tmp_path / "arrivals.csv"), **replay}
    path = tmp_path / "replay.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_own_columns_with_token_counts_and_categories(tmp_path, capsys):
    arrivals = pd.DataFrame({"time_s": [0.5, 1.0, 1.0, 7.25, 9.0], "category": ["gsm8k", "humaneval", "gsm8k",
                                                                             "humaneval", "gsm8k"],
                             "prompt_tokens": [12, 900, 33, 4000, 7], "output_tokens": [1, 250, 64, 9, 300]})
    code, err = run(capsys, own_columns_scenario(tmp_path, arrivals, time_scale=2.0), tmp_path / "out")
    assert code == 0, err
    q = records(tmp_path / "out")
    np.testing.assert_array_equal(q["arrival_s"], arrivals["time_s"] * 2.0)
    np.testing.assert_array_equal(q["prompt_tokens"], arrivals["prompt_tokens"])
    np.testing.assert_array_equal(q["output_tokens"], arrivals["output_tokens"])
    assert q["category"].astype(str).tolist() == arrivals["category"].tolist()


def test_one_category_for_a_file_without_categories(tmp_path, capsys):
    arrivals = pd.DataFrame({"time_s": np.arange(6) * 0.7})
    code, err = run(capsys, own_columns_scenario(tmp_path, arrivals, category="gsm8k"), tmp_path / "out")
    assert code == 0, err
    assert set(records(tmp_path / "out")["category"].astype(str)) == {"gsm8k"}


@pytest.mark.parametrize("arrivals, replay, named", [
    (pd.DataFrame({"time_s": [0.0, 1.0], "prompt_tokens": [5, 6]}), {}, ["arrivals.csv", "output_tokens"]),
    (pd.DataFrame({"time_s": [0.0, 1.0], "prompt_tokens": [5, 6], "output_tokens": [3, 0]}), {},
     ["arrivals.csv", "output_tokens", "row 1"]),
    (pd.DataFrame({"time_s": [0.0, 1.0]}), {"category": "chat"}, ["replay.yaml", "arrivals.category", "'chat'"]),
    (pd.DataFrame({"TIMESTAMP": ["2023-11-16 18:15:46.68", "yesterday"], "ContextTokens": [5, 6],
                   "GeneratedTokens": [3, 4]}), {"format": "azure_llm_2023"}, ["arrivals.csv", "TIMESTAMP", "row 1"]),
    (pd.DataFrame({"time_s": [0.0, 1.0]}), {"format": "azure_llm_2023"}, ["arrivals.csv", "TIMESTAMP"]),
])
def test_bad_traces_are_one_line(tmp_path, capsys, arrivals, replay, named):
    code, err = run(capsys, own_columns_scenario(tmp_path, arrivals, **replay), tmp_path / "out")
    assert code == 2 and err.startswith("moe2sim: error: ") and len(err.strip().splitlines()) == 1, err
    for s in named:
        assert s in err, err
    assert not (tmp_path / "out").exists()
