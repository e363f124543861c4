"""The data check: per task and split the best single model and the oracle computed from the scores, and
each flag raised where its condition holds and not where it does not; `moe2sim data check --strict` exits
1 on a flag, 0 without."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from moe2sim.cli import main
from moe2sim.routing.data_check import MIN_VALIDATION, check_data

MODELS = ["a", "b", "c"]


def folder(tmp_path, scores: dict[str, np.ndarray], scoring: str = "threshold", questions=None):
    """A data folder (prompts.parquet, quality.parquet) of one task 't' with the given scores per split."""
    prompts, quality = [], []
    for split, matrix in scores.items():
        for i, row in enumerate(matrix):
            pid = f"t/{split}/{i:04d}"
            q = questions[split][i] if questions else f"{split} question {i}"
            prompts.append({"prompt_id": pid, "task": "t", "split": split, "scoring": scoring, "options": 0,
                            "prompt_tokens": 5, "prompt_bytes": 20, "question": q})
            quality += [{"prompt_id": pid, "expert": m, "score": float(s), "correct": bool(s > 0)}
                        for m, s in zip(MODELS, row)]
    tmp_path.mkdir(exist_ok=True)
    pd.DataFrame(prompts).to_parquet(tmp_path / "prompts.parquet")
    pd.DataFrame(quality).to_parquet(tmp_path / "quality.parquet")
    return tmp_path


def kinds(data) -> list[str]:
    return [f.kind for f in check_data(data).flags]


def varied(n: int, seed: int) -> np.ndarray:
    """0/1 scores of three distinct, imperfect models whose oracle beats the best of them."""
    right = np.random.default_rng(seed).random((n, 3)) < [0.5, 0.6, 0.7]
    right[0] = [True, False, False]
    right[1] = [False, True, False]
    right[2] = False
    return right.astype(float)


@pytest.fixture
def clean(tmp_path):
    return folder(tmp_path / "clean", {"train": varied(400, 0), "test": varied(100, 1)})


def test_figures_and_no_flags_on_clean_data(clean):
    check = check_data(clean)
    assert check.flags == []
    test = varied(100, 1)
    fig = next(f for f in check.figures if f.split == "test")
    assert (fig.prompts, fig.models) == (100, 3)
    assert fig.best == pytest.approx(test.mean(axis=0).max())
    assert fig.best_model == MODELS[int(test.mean(axis=0).argmax())]
    assert fig.oracle == pytest.approx(test.max(axis=1).mean())


def test_expected_scoring_counts_the_best_score(tmp_path):
    scores = np.array([[0.2, 0.6, 0.0], [1.0, 0.4, 0.2], [0.0, 0.0, 0.8]])
    fig = check_data(folder(tmp_path, {"test": scores}, scoring="expected")).figures[0]
    assert fig.oracle == pytest.approx((0.6 + 1.0 + 0.8) / 3, rel=1e-6)
    assert fig.best == pytest.approx((0.2 + 1.0) / 3, rel=1e-6) and fig.best_model == "a"


def test_perfect_model(tmp_path):
    scores = varied(400, 0)
    scores[:, 2] = 1.0
    flags = check_data(folder(tmp_path, {"train": scores, "test": varied(100, 1)})).flags
    perfect = [f for f in flags if f.kind == "perfect_model"]
    assert len(perfect) == 1 and "model c is right on all 400 prompts" in perfect[0].message
    assert "oracle_is_best_single" in [f.kind for f in flags]  # the oracle cannot beat it either


def test_oracle_is_best_single(tmp_path):
    scores = varied(100, 1)
    scores[:, 0] = scores[:, 1] = scores[:, 2] * 0  # only c is ever right: it is the oracle
    scores[0, 2] = 0
    assert kinds(folder(tmp_path, {"train": varied(400, 0), "test": scores})) == ["oracle_is_best_single"]


def test_near_identical_models(tmp_path):
    train, test = varied(400, 0), varied(100, 1)
    train[:, 1], test[:, 1] = train[:, 0], test[:, 0]
    test[5, 1] = 1 - test[5, 0]  # one disagreement in 500 prompts: 99.8 % agreement
    flags = check_data(folder(tmp_path, {"train": train, "test": test})).flags
    assert [f.kind for f in flags] == ["near_identical"]
    assert "models a and b agree on 99.8% of 500 prompts" in flags[0].message


def test_small_validation(tmp_path):
    flags = check_data(folder(tmp_path, {"train": varied(100, 0), "test": varied(100, 1)})).flags
    assert [f.kind for f in flags] == ["small_validation"]
    n = int(flags[0].message.split("has ")[1].split(" ")[0])
    assert 0 < n < MIN_VALIDATION


def test_leakage(tmp_path):
    questions = {"train": [f"train question {i}" for i in range(400)], "test": [f"test question {i}" for i in range(100)]}
    questions["test"][3] = questions["train"][10]
    questions["test"][4] = questions["train"][11]
    flags = check_data(folder(tmp_path, {"train": varied(400, 0), "test": varied(100, 1)}, questions=questions)).flags
    assert [f.kind for f in flags] == ["leakage"] and "2 prompts appear in more than one split" in flags[0].message


def test_cli_strict_exit_codes(clean, tmp_path, capsys):
    assert main(["data", "check", str(clean), "--strict"]) == 0
    assert "no flags" in capsys.readouterr().out
    flagged = folder(tmp_path / "small", {"train": varied(100, 0), "test": varied(100, 1)})
    assert main(["data", "check", str(flagged)]) == 0
    assert main(["data", "check", str(flagged), "--strict"]) == 1
    assert "flag small_validation" in capsys.readouterr().out
    assert main(["data", "check", str(flagged), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["kind"] for f in out["flags"]] == ["small_validation"] and len(out["tasks"]) == 2


def test_cli_missing_folder(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moe2sim: error: ") and "prompts.parquet" in err and len(err.strip().splitlines()) == 1


def test_bundled_data_flags_humaneval_validation_and_real_duplicates():
    """The bundled RouterDC data: HumanEval's validation part is 19 prompts; RouterDC's MMLU and ARC-C
    splits share a few questions verbatim."""
    from moe2sim.data.bundled import bundled_path

    flags = check_data(bundled_path("traces")).flags
    assert [f.kind for f in flags] == ["small_validation", "leakage", "leakage"]
    assert "task humaneval: its validation part has 19 prompts" in flags[0].message
