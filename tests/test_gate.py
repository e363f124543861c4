"""The gating network (moe2sim.routing.gate) and its training/evaluation (moe2sim.routing.evaluation,
`moe2sim train-gate`, `moe2sim eval-gate`): it learns from the embedding, starts from the task
prior, round-trips through checkpoints, is seeded, and never trains on the test split.

Trainings are real (torch, no mocks) but small: a few hundred synthetic prompts and a few epochs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TRACES
from moe2sim.cli import main
from moe2sim.data.embeddings import load_embeddings, save_embeddings
from moe2sim.errors import InputError
from moe2sim.routing.gate import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, PRIOR_CLIP, Gate, GateNet, TrainConfig,
                                  task_accuracy, train_gate)
from moe2sim.data.quality import load_quality

ROUTERDC_MODELS = ["mistralai/Mistral-7B-v0.1", "meta-math/MetaMath-Mistral-7B", "itpossible/Chinese-Mistral-7B-v0.1",
                   "HuggingFaceH4/zephyr-7b-beta", "cognitivecomputations/dolphin-2.6-mistral-7b",
                   "meta-llama/Meta-Llama-3-8B", "cognitivecomputations/dolphin-2.9-llama3-8b"]
TASKS = ["mmlu", "gsm8k", "arc_challenge", "humaneval"]
DIM = 16
EXPERTS = ["e0", "e1", "e2"]
CENTERS = np.random.default_rng(100).normal(scale=2.0, size=(3, DIM))
SMALL = dict(hidden=32, batch_size=32, max_epochs=8)


def clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three Gaussian clusters in 16-d; expert c is right on cluster c, the others right 20% of the time."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 3, n)
    x = (CENTERS[c] + rng.normal(size=(n, DIM))).astype(np.float32)
    correct = (np.arange(3)[None, :] == c[:, None]) | (rng.random((n, 3)) < 0.2)
    return x, np.full(n, "task"), correct.astype(np.float32)


TRAIN, VAL, TEST = clusters(300, 1), clusters(100, 2), clusters(400, 3)


def train(loss: str = "bce", seed: int = 0, data=TRAIN, val=VAL, **overrides) -> Gate:
    config = TrainConfig(loss=loss, seed=seed, **{**SMALL, **overrides})
    return train_gate(*data, *val, EXPERTS, "synthetic", config)


def untrained(x: np.ndarray, tasks: np.ndarray, scores: np.ndarray, seed: int = 0) -> Gate:
    """The gate as train_gate builds it, before any optimiser step (one task: its posterior is 1)."""
    torch.manual_seed(seed)
    names = list(dict.fromkeys(str(t) for t in tasks))
    net = GateNet(x.shape[1], torch.as_tensor(task_accuracy(scores, tasks, names)), SMALL["hidden"], 0.3)
    return Gate(net, [f"e{i}" for i in range(scores.shape[1])], names, x.shape[1], "synthetic", TrainConfig(**SMALL))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, PRIOR_CLIP, 1 - PRIOR_CLIP)
    return np.log(p / (1 - p))


def top1_accuracy(logits: np.ndarray, scores: np.ndarray) -> float:
    top = logits.argmax(axis=1)
    return float((scores[np.arange(len(top)), top] > 0).mean())


@pytest.fixture(scope="module")
def gates() -> dict[tuple[str, int], Gate]:
    """Trained gates by (loss, seed), each trained once per module."""
    cache: dict[tuple[str, int], Gate] = {}

    def get(loss: str, seed: int) -> Gate:
        if (loss, seed) not in cache:
            cache[(loss, seed)] = train(loss, seed)
        return cache[(loss, seed)]

    return get


# --- learning ----------------------------------------------------------------------------------

def test_untrained_gate_outputs_task_prior():
    x, tasks, scores = TRAIN
    gate = untrained(x, tasks, scores)
    # one task: the prior is the logit of each expert's train accuracy, for every prompt, with or without the label
    expected = logit(scores.mean(axis=0))
    np.testing.assert_allclose(gate.logits(TEST[0]), np.broadcast_to(expected, (len(TEST[0]), 3)), rtol=1e-5)
    np.testing.assert_allclose(gate.logits(TEST[0], TEST[1]), gate.logits(TEST[0]), rtol=1e-6)


@pytest.mark.parametrize("loss", ["bce", "mixture"])
def test_gate_learns_expert_from_embedding(gates, loss):
    gate = gates(loss, 0)
    x, tasks, scores = TEST
    prior_acc = top1_accuracy(untrained(*TRAIN).logits(x), scores)
    gate_acc = top1_accuracy(gate.logits(x), scores)
    assert prior_acc < 0.6  # every expert is right on ~47% of prompts: the prior cannot do better
    assert gate_acc > prior_acc + 0.3, (gate_acc, prior_acc)
    assert gate_acc > 0.9
    assert gate.info["val_task_mean_accuracy"] > 0.9 and gate.info["beat_prior"]
    assert gate.info["train_prompts"] == 300 and gate.info["val_prompts"] == 100
    # the per-task accuracy table is a fixed buffer, not trained
    np.testing.assert_allclose(gate.net.task_acc.numpy(), TRAIN[2].mean(axis=0, keepdims=True), rtol=1e-6)


def two_tasks(n: int = 400, seed: int = 5):
    """Tasks a and b apart in embedding space; e0 is best on a, e1 on b, e2 mediocre on both."""
    rng = np.random.default_rng(seed)
    tasks = np.array(["a"] * n + ["b"] * n)
    p_right = np.array([[0.9, 0.1, 0.5]] * n + [[0.1, 0.9, 0.5]] * n)
    scores = (rng.random((2 * n, 3)) < p_right).astype(np.float32)
    x = (rng.normal(size=(2 * n, DIM)) + np.where(tasks == "a", 3.0, -3.0)[:, None]).astype(np.float32)
    return x, tasks, scores


def test_label_free_gate_recognises_the_task_and_picks_its_best_expert():
    x, tasks, scores = two_tasks()
    gate = train_gate(x, tasks, scores, x, tasks, scores, EXPERTS, "synthetic", TrainConfig(**{**SMALL, "max_epochs": 0}))
    assert gate.tasks == ["a", "b"] and not gate.info["beat_prior"]
    for given in (None, tasks):  # from the prompt alone, and with the label as input
        top = gate.logits(x, given).argmax(axis=1)
        assert np.all(top[tasks == "a"] == 0) and np.all(top[tasks == "b"] == 1)
    # an unseen task is routed from its embedding (its task posterior), not a pooled prior
    unseen = gate.logits(x[:5], np.array(["never-seen"] * 5))
    np.testing.assert_allclose(unseen, gate.logits(x[:5]), rtol=1e-6)
    assert gate.task_index(np.array(["a", "b", "zzz"])).tolist() == [0, 1, -1]


def test_expected_task_targets_are_soft():
    """Under the published rule an expected task's target is the probability itself, not score > 0:
    the accuracy table of a one-task gate is the mean of the targets it was given."""
    x, tasks, _ = TRAIN
    u = np.tile([[0.2, 0.5, 0.9]], (len(x), 1)).astype(np.float32)
    gate = untrained(x, tasks, u)
    np.testing.assert_allclose(gate.net.task_acc.numpy()[0], [0.2, 0.5, 0.9], rtol=1e-5)
    assert gate.logits(x[:3]).argmax(axis=1).tolist() == [2, 2, 2]


def test_prior_clipped_for_always_and_never_right_experts():
    scores = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 1], [1, 0, 0]], np.float32)
    gate = untrained(np.zeros((4, DIM), np.float32), np.array(["t"] * 4), scores)
    logits = gate.logits(np.zeros((1, DIM), np.float32))[0]
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(logits, [np.log(0.98 / 0.02), np.log(0.02 / 0.98), 0.0], atol=1e-5)


def test_checkpoint_round_trip(gates, tmp_path):
    gate = gates("bce", 0)
    path = tmp_path / "gate.pt"
    gate.save(path)
    loaded = Gate.load(path)
    np.testing.assert_array_equal(loaded.logits(TEST[0], TEST[1]), gate.logits(TEST[0], TEST[1]))
    np.testing.assert_array_equal(loaded.logits(TEST[0][:3], np.array(["other"] * 3)),
                                  gate.logits(TEST[0][:3], np.array(["other"] * 3)))
    assert (loaded.experts, loaded.tasks, loaded.dim, loaded.encoder) == (EXPERTS, ["task"], DIM, "synthetic")
    assert loaded.config == gate.config and loaded.info == gate.info
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def checkpoint_payload(gate: Gate, tmp_path: Path) -> dict:
    good = tmp_path / "good.pt"
    gate.save(good)
    return torch.load(good, weights_only=True)


def not_a_checkpoint(payload, path: Path) -> None:
    path.write_bytes(b"this is not a torch file\n" * 20)


def other_format(payload, path: Path) -> None:
    torch.save({**payload, "format": "someone-elses-gate"}, path)


def no_format(payload, path: Path) -> None:
    torch.save([1, 2, 3], path)


def other_version(payload, path: Path) -> None:
    torch.save({**payload, "version": CHECKPOINT_VERSION + 1}, path)


@pytest.mark.parametrize("corrupt, field", [(not_a_checkpoint, None), (other_format, "format"),
                                            (no_format, "format"), (other_version, "version")],
                         ids=["garbage", "other-format", "a-list", "other-version"])
def test_load_rejects_bad_checkpoint(gates, tmp_path, corrupt, field):
    payload = checkpoint_payload(gates("bce", 0), tmp_path)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["version"] == CHECKPOINT_VERSION
    bad = tmp_path / "bad.pt"
    corrupt(payload, bad)
    with pytest.raises(InputError) as info:
        Gate.load(bad)
    assert info.value.file == str(bad)
    assert str(bad) in str(info.value)
    assert info.value.field == field


def test_load_missing_checkpoint_names_file(tmp_path):
    with pytest.raises(InputError, match="not found") as info:
        Gate.load(tmp_path / "nope.pt")
    assert info.value.file == str(tmp_path / "nope.pt")


def test_logits_wrong_dimension(gates):
    gate = gates("bce", 0)
    with pytest.raises(InputError, match="dimension 10.*expects 16"):
        gate.logits(np.zeros((4, 10), np.float32), np.array(["task"] * 4))


# --- seeding -----------------------------------------------------------------------------------

def state(gate: Gate) -> dict[str, torch.Tensor]:
    return gate.net.state_dict()


def test_same_seed_same_weights_different_seed_different(gates):
    a, b, c = gates("bce", 0), train("bce", 0), gates("bce", 1)
    assert state(a).keys() == state(b).keys()
    for name, tensor in state(a).items():
        assert torch.equal(tensor, state(b)[name]), name
    assert a.info["best_epoch"] == b.info["best_epoch"]
    np.testing.assert_array_equal(a.logits(TEST[0], TEST[1]), b.logits(TEST[0], TEST[1]))
    trained = [n for n in state(a) if n != "task_acc"]
    assert all(not torch.equal(state(a)[n], state(c)[n]) for n in trained)
    assert not np.array_equal(a.logits(TEST[0], TEST[1]), c.logits(TEST[0], TEST[1]))


def test_zero_epochs_is_not_a_crash():
    """`train-gate --epochs 0` (or TrainConfig(max_epochs=0)) must either give the untrained
    (task-prior) gate or a clean input error — not an UnboundLocalError traceback.

    Library bug (moe2sim/routing/gate.py, train_gate): `epoch` is only bound inside the epoch loop, and
    `gate.info = {..., "epochs_run": epoch + 1, ...}` reads it after the loop.
    """
    try:
        gate = train("bce", 0, max_epochs=0)
    except (ValueError, InputError) as exc:  # rejecting it cleanly is a fix too
        assert "epoch" in str(exc)
        return
    assert gate.info["epochs_run"] == 0
    np.testing.assert_array_equal(gate.logits(TEST[0], TEST[1]), untrained(*TRAIN).logits(TEST[0], TEST[1]))


# --- the bundled gate and `eval-gate` ----------------------------------------------------------

def test_bundled_gate_covers_routerdc_experts_and_tasks():
    gate = Gate.load(TRACES / "gate.pt")
    assert sorted(gate.experts) == sorted(ROUTERDC_MODELS)
    assert sorted(gate.tasks) == sorted(TASKS)
    assert gate.dim == 384
    quality = pd.read_parquet(TRACES / "quality.parquet", columns=["expert"])
    assert set(quality["expert"].astype(str)) == set(gate.experts)


@pytest.fixture(scope="module")
def eval_table() -> dict[str, dict[str, float]]:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["eval-gate", "--data", str(TRACES), "--json"])
    assert code == 0
    return json.loads(buf.getvalue())


def test_eval_gate_json_has_every_method(eval_table):
    keys = list(eval_table)
    expected = ["random expert", "best expert per task (chosen on train)", "gate k=1", "gate k=2 (weighted vote)",
                "gate k=3 (weighted vote)"]
    for key in expected:
        assert key in keys, keys
    assert any(k.startswith("best single expert (") for k in keys)
    assert any(k.startswith("oracle") for k in keys)
    assert "gate k=1 (with the task label)" in keys  # the label-aware variant is reported beside
    for method, row in eval_table.items():
        assert set(row) == {"pooled", "task_mean", "task_mean_se", *TASKS}, method
        assert all(0.0 <= v <= 1.0 for v in row.values()), method
        assert row["task_mean"] == pytest.approx(np.mean([row[t] for t in TASKS]))


def test_eval_gate_oracle_bounds_every_method(eval_table):
    oracle = next(row for k, row in eval_table.items() if k.startswith("oracle"))
    for method, row in eval_table.items():
        for col, value in row.items():
            if col != "task_mean_se":
                assert value <= oracle[col] + 1e-12, (method, col)


def test_eval_gate_reproduces_published_figures(eval_table):
    """Under RouterDC's published rule. The threshold tasks match shared/data/README.md (best expert per task
    chosen on train: MMLU 0.646, ARC-C 0.580; oracle MMLU 0.853, ARC-C 0.724); the expected tasks are mean
    scores of the expert chosen on train (GSM8K 0.696, HumanEval 0.494)."""
    oracle = next(row for k, row in eval_table.items() if k.startswith("oracle"))
    per_task = eval_table["best expert per task (chosen on train)"]
    assert {t: round(per_task[t], 3) for t in TASKS} == {"mmlu": 0.646, "gsm8k": 0.696, "arc_challenge": 0.58,
                                                         "humaneval": 0.494}
    assert {t: round(oracle[t], 3) for t in ("mmlu", "arc_challenge")} == {"mmlu": 0.853, "arc_challenge": 0.724}
    best_single = next(k for k in eval_table if k.startswith("best single expert ("))
    assert "MetaMath" in best_single  # the best single expert on train changes under the published rule
    # with two experts the weighted vote is the heavier expert's answer (see test_aggregation)
    assert eval_table["gate k=2 (weighted vote)"] == eval_table["gate k=1"]


# --- `train-gate` --------------------------------------------------------------------------------

def garbage_test_split(src: Path, dst: Path) -> None:
    """A copy of a data folder where every test-split score and embedding is replaced by garbage."""
    dst.mkdir()
    shutil.copy(src / "prompts.parquet", dst / "prompts.parquet")
    prompts = pd.read_parquet(src / "prompts.parquet", columns=["prompt_id", "split"])
    test_ids = set(prompts.loc[prompts["split"] == "test", "prompt_id"].astype(str))
    quality = pd.read_parquet(src / "quality.parquet")
    is_test = quality["prompt_id"].astype(str).isin(test_ids).to_numpy()
    quality.loc[is_test, "score"] = 0.0
    quality.loc[is_test, "correct"] = False
    quality.to_parquet(dst / "quality.parquet", index=False)
    with np.load(src / "embeddings.npz") as z:
        ids, matrix, encoder = z["prompt_id"].astype(str), z["embedding"].astype(np.float32), str(z["encoder"])
    test_rows = np.isin(ids, list(test_ids))
    matrix[test_rows] = np.random.default_rng(0).normal(size=(int(test_rows.sum()), matrix.shape[1]))
    save_embeddings(dst / "embeddings.npz", ids, matrix, encoder)


def test_train_gate_writes_checkpoint_and_never_reads_test_split(tmp_path, capsys):
    garbage = tmp_path / "garbage"
    garbage_test_split(TRACES, garbage)
    # the copy really differs on the test split (and only there)
    models = ROUTERDC_MODELS
    assert not load_quality(garbage / "prompts.parquet", garbage / "quality.parquet", models, "test").scores.any()
    assert load_quality(TRACES / "prompts.parquet", TRACES / "quality.parquet", models, "test").scores.any()

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(["train-gate", "--data", str(TRACES), "--out", str(a), "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert str(a) in out and "validation k=1 task-mean accuracy" in out
    assert main(["train-gate", "--data", str(garbage), "--out", str(b), "--epochs", "3"]) == 0
    ga, gb = Gate.load(a), Gate.load(b)
    assert ga.experts == gb.experts and sorted(ga.experts) == sorted(ROUTERDC_MODELS)
    assert ga.info["epochs_run"] <= 3
    sa, sb = ga.net.state_dict(), gb.net.state_dict()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    # and the gate trained on the original data evaluates like any gate
    ids = np.array(["mmlu/test/0000", "gsm8k/test/0000"])
    x = load_embeddings(TRACES / "embeddings.npz", ids, ga.dim)
    assert ga.logits(x, np.array(["mmlu", "gsm8k"])).shape == (2, 7)
