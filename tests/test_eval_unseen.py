"""`eval-gate` on a test-only folder of tasks the gate never saw: the rows that can apply, and no others."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from moe2sim.cli import main
from moe2sim.data.bundled import bundled_path


def test_only_folder_of_unseen_tasks(tmp_path, capsys):
    traces = bundled_path("traces")
    prompts = pd.read_parquet(traces / "prompts.parquet")
    prompts = prompts[(prompts["split"] == "test") & prompts["task"].isin(["arc_challenge", "humaneval"])].copy()
    prompts["task"] = "novel_" + prompts["task"].astype(str)  # labels the gate never saw
    prompts.to_parquet(tmp_path / "prompts.parquet")
    quality = pd.read_parquet(traces / "quality.parquet")
    quality[quality["prompt_id"].isin(prompts["prompt_id"])].to_parquet(tmp_path / "quality.parquet")
    with np.load(traces / "embeddings.npz") as z:
        keep = np.isin(z["prompt_id"], prompts["prompt_id"].to_numpy())
        np.savez(tmp_path / "embeddings.npz", prompt_id=z["prompt_id"][keep], embedding=z["embedding"][keep],
                 encoder=z["encoder"])
    code = main(["eval-gate", "--data", str(tmp_path), "--gate", str(traces / "gate.pt"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    table = json.loads(out)
    assert not any("with the task label" in k for k in table)  # would repeat the label-free rows
    training_best = next(k for k in table if k.startswith("best single expert of the training tasks ("))
    hindsight = table["best single expert per task in hindsight (chosen on test)"]
    oracle = table["oracle (best expert per prompt)"]
    for task in ("novel_arc_challenge", "novel_humaneval"):
        assert table[training_best][task] <= hindsight[task] + 1e-12 <= oracle[task] + 2e-12
        assert hindsight[task] >= table["random expert"][task]
    assert {"gate k=1", "gate k=3 (weighted vote)"} <= set(table)
