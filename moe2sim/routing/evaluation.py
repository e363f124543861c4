"""Training and evaluating the gate on a data folder (prompts, quality, embeddings).

Evaluation on the held-out test split, pooled over all test prompts and per task:
random expert (expected accuracy), best single expert and best expert per task (both chosen
on train; on a test-only folder, the best single expert of the tasks the gate was trained on),
the best single expert per task in hindsight, the gate at k = 1, 2, 3 (top-k of all experts,
weighted vote; with the task label too where the gate knows some test task), and the oracle
(right if any expert is right; an upper bound).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moe2sim.data.embeddings import ENCODER, load_embeddings
from moe2sim.data.quality import QualityData, QualityTables, validation_mask
from moe2sim.errors import InputError
from moe2sim.routing.aggregation import Outcomes, WeightedVote, expected_correct
from moe2sim.routing.crossfit import CrossFit, cross_fit
from moe2sim.routing.gate import Gate, TrainConfig, train_gate
from moe2sim.routing.routers import topk_in_subset



@dataclass(frozen=True)
class GateData:
    """One split of a data folder with the prompts' embeddings, rows aligned."""

    quality: QualityData
    x: np.ndarray

    @classmethod
    def load(cls, data: Path, split: str, experts: list[str] | None = None, dim: int | None = None) -> "GateData":
        tables = QualityTables.read(data / "prompts.parquet", data / "quality.parquet")
        quality = tables.split(tables.models if experts is None else experts, split)
        return cls(quality, load_embeddings(data / "embeddings.npz", quality.prompt_ids, dim))

    @property
    def tasks(self) -> np.ndarray:
        return self.quality.tasks

    @property
    def p(self) -> np.ndarray:
        """P(one answer right) per prompt and expert, under each task's scoring rule."""
        return Outcomes.of(self.quality.scores, self.quality.expected).p

    def subset(self, mask: np.ndarray) -> "GateData":
        q = self.quality
        return GateData(QualityData(q.prompts[mask].reset_index(drop=True), q.scores[mask], q.experts), self.x[mask])


def train_on(data: Path, config: TrainConfig, experts: list[str] | None = None,
             without_task: str | None = None) -> Gate:
    """Train a gate on the train split of `data` (without one task's prompts, if given), early-stopped
    on its validation part; targets are P(one answer right) under each task's scoring rule."""
    train = GateData.load(data, "train", experts)
    if without_task is not None:
        train = train.subset(train.tasks != without_task)
    val = validation_mask(train.quality.prompt_ids)
    fit, hold = train.subset(~val), train.subset(val)
    return train_gate(fit.x, fit.tasks, fit.p, hold.x, hold.tasks, hold.p, list(train.quality.experts), ENCODER,
                      config)


def cross_fit_on(data: Path, config: TrainConfig, folds: int, fold_seed: int) -> CrossFit:
    """Cross-fitted logits of the train split of `data` (routing/crossfit.py)."""
    train = GateData.load(data, "train")
    return cross_fit(train.x, train.tasks, train.p, train.quality.prompt_ids, list(train.quality.experts), config,
                     folds, fold_seed)


def _by_task(p_correct: np.ndarray, tasks: np.ndarray) -> dict[str, float]:
    """Accuracy pooled over prompts, per task, and as the mean over tasks (how RouterDC reports), with the
    standard error of that mean: SE = sqrt(Σ_t var_t / n_t) / T, var_t the per-prompt variance of the
    probability of a right answer (its Bernoulli variance p(1 − p) included)."""
    names = list(dict.fromkeys(tasks))
    per_task = {t: p_correct[tasks == t] for t in names}
    means = {t: float(v.mean()) for t, v in per_task.items()}
    # Var(one prompt's outcome) = Var(p) + E[p(1 − p)]: the spread over prompts plus the draw itself
    var = {t: float(v.var() + (v * (1 - v)).mean()) for t, v in per_task.items()}
    se = float(np.sqrt(sum(var[t] / len(per_task[t]) for t in names)) / len(names))
    return {"pooled": float(p_correct.mean()), "task_mean": float(np.mean(list(means.values()))),
            "task_mean_se": se, **means}


def _train_split(data: Path, gate: Gate) -> GateData | None:
    try:
        return GateData.load(data, "train", gate.experts, gate.dim)
    except InputError as err:
        if err.field != "split":
            raise
        return None


def evaluate(gate: Gate, data: Path, options: dict[str, int] | None = None, vote_seed: int = 0
             ) -> dict[str, dict[str, float]]:
    """Method -> {pooled, task_mean, task_mean_se, <task>: test accuracy} under each task's published
    scoring rule (exact expected accuracy; aggregation.expected_correct). The gate routes from the
    prompt alone, and again with the task label as an input (the label-aware variant)."""
    test = GateData.load(data, "test", gate.experts, gate.dim)
    outcomes = Outcomes.of(test.quality.scores, test.quality.expected)
    p, tasks = outcomes.p, test.tasks
    rows = np.arange(len(tasks))
    table: dict[str, dict[str, float]] = {"random expert": _by_task(p.mean(axis=1), tasks)}
    train = _train_split(data, gate)
    if train is not None:  # the baselines chosen on this folder's train split
        p_train, train_tasks = train.p, train.tasks
        best = int(p_train.mean(axis=0).argmax())
        table[f"best single expert ({gate.experts[best]})"] = _by_task(p[:, best], tasks)
        per_task = np.empty(len(tasks))
        for task in dict.fromkeys(tasks):
            in_train = train_tasks == task
            choice = int(p_train[in_train].mean(axis=0).argmax()) if in_train.any() else best
            per_task[tasks == task] = p[tasks == task, choice]
        table["best expert per task (chosen on train)"] = _by_task(per_task, tasks)
    else:  # a test-only folder: the best single expert of the tasks the gate was trained on (its A[t, n])
        best = int(gate.net.task_acc.numpy().mean(axis=0).argmax())
        table[f"best single expert of the training tasks ({gate.experts[best]})"] = _by_task(p[:, best], tasks)
    hindsight = np.empty(len(tasks))
    for task in dict.fromkeys(tasks):
        rows_t = tasks == task
        hindsight[rows_t] = p[rows_t, int(p[rows_t].mean(axis=0).argmax())]
    table["best single expert per task in hindsight (chosen on test)"] = _by_task(hindsight, tasks)
    vote = WeightedVote.assumed_answers(len(gate.experts), test.quality.options(options), vote_seed)
    everyone = np.ones(len(gate.experts), bool)
    # the label-aware rows only where the gate knows some test task's label (else they repeat the label-free ones)
    variants = [("", None)] + ([(" (with the task label)", tasks)] if set(tasks) & set(gate.tasks) else [])
    for label, given in variants:
        logits = gate.logits(test.x, given)
        for k in (1, 2, 3)[:len(gate.experts)]:
            experts, weights = topk_in_subset(logits, everyone, k)
            table[f"gate k={k}{label}" + (" (weighted vote)" if k > 1 else "")] = _by_task(
                expected_correct(vote, outcomes, rows, experts, weights), tasks)
    table["oracle (best expert per prompt)"] = _by_task(p.max(axis=1), tasks)
    return table


def format_table(table: dict[str, dict[str, Any]]) -> str:
    df = pd.DataFrame(table).T
    return df.to_string(float_format=lambda v: f"{v:.3f}")


def leave_task_out(data: Path, config: TrainConfig) -> dict[str, dict[str, float]]:
    """For each task t: a gate trained without t's prompts, tested on t's test prompts (k = 1, label-free),
    against the best single expert chosen on the other tasks' train prompts and the hindsight best single
    expert on t's test prompts (the per-task oracle choice)."""
    test = GateData.load(data, "test")
    train = GateData.load(data, "train", list(test.quality.experts))
    table: dict[str, dict[str, float]] = {}
    for task in dict.fromkeys(test.tasks):
        gate = train_on(data, config, list(test.quality.experts), without_task=task)
        held = test.subset(test.tasks == task)
        p = held.p
        top1 = gate.logits(held.x).argmax(axis=1)
        others = train.p[train.tasks != task].mean(axis=0)
        table[task] = {"gate (trained without the task)": float(p[np.arange(len(p)), top1].mean()),
                       "best single expert of the other tasks": float(p[:, int(others.argmax())].mean()),
                       "best single expert in hindsight": float(p.mean(axis=0).max()),
                       "gate beat its prior": float(gate.info["beat_prior"]), "test prompts": float(len(p))}
    return table
