"""Training and evaluating the gate on a data folder (prompts, quality, embeddings).

Evaluation on the held-out test split, pooled over all test prompts and per task:
random expert (expected accuracy), best single expert and best expert per task (both chosen
on train), the gate at k = 1, 2, 3 (top-k of all experts, weighted vote), and the oracle
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
from moe2sim.routing.aggregation import WeightedVote
from moe2sim.routing.gate import Gate, TrainConfig, train_gate
from moe2sim.routing.routers import topk_in_subset

# Choices of the bundled multiple-choice tasks (ARC-Challenge: 4 for almost all questions).
DEFAULT_OPTIONS = {"mmlu": 4, "arc_challenge": 4}


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

    def subset(self, mask: np.ndarray) -> "GateData":
        q = self.quality
        return GateData(QualityData(q.prompts[mask].reset_index(drop=True), q.scores[mask], q.experts), self.x[mask])


def train_on(data: Path, config: TrainConfig, experts: list[str] | None = None) -> Gate:
    """Train a gate on the train split of `data`, early-stopped on its validation part."""
    train = GateData.load(data, "train", experts)
    val = validation_mask(train.quality.prompt_ids)
    fit, hold = train.subset(~val), train.subset(val)
    return train_gate(fit.x, fit.tasks, fit.quality.scores, hold.x, hold.tasks, hold.quality.scores,
                      list(train.quality.experts), ENCODER, config)


def _by_task(correct: np.ndarray, tasks: np.ndarray) -> dict[str, float]:
    out = {"pooled": float(correct.mean())}
    for task in dict.fromkeys(tasks):
        out[task] = float(correct[tasks == task].mean())
    return out


def evaluate(gate: Gate, data: Path, options: dict[str, int] = DEFAULT_OPTIONS, vote_seed: int = 0
             ) -> dict[str, dict[str, float]]:
    """Method -> {pooled, <task>: test accuracy}."""
    train = GateData.load(data, "train", gate.experts, gate.dim)
    test = GateData.load(data, "test", gate.experts, gate.dim)
    correct_train, correct = train.quality.scores > 0, test.quality.scores > 0
    tasks, train_tasks = test.tasks, train.tasks
    n = len(tasks)
    rows = np.arange(n)
    table: dict[str, dict[str, float]] = {}
    table["random expert"] = _by_task(correct.mean(axis=1), tasks)
    best = int(correct_train.mean(axis=0).argmax())
    table[f"best single expert ({gate.experts[best]})"] = _by_task(correct[:, best], tasks)
    per_task = np.empty(n, bool)
    for task in dict.fromkeys(tasks):
        in_train = train_tasks == task
        choice = int(correct_train[in_train].mean(axis=0).argmax()) if in_train.any() else best
        per_task[tasks == task] = correct[tasks == task, choice]
    table["best expert per task (chosen on train)"] = _by_task(per_task, tasks)
    logits = gate.logits(test.x, tasks)
    vote = WeightedVote.assumed_answers(test.quality.scores,
                                        np.array([options.get(t, 0) for t in tasks]), vote_seed)
    everyone = np.ones(len(gate.experts), bool)
    for k in (1, 2, 3):
        if k > len(gate.experts):
            break
        experts, weights = topk_in_subset(logits, everyone, k)
        table[f"gate k={k}" + (" (weighted vote)" if k > 1 else "")] = _by_task(
            vote.combine(rows, experts, weights) > 0, tasks)
    table["oracle (any expert right; upper bound)"] = _by_task(correct.any(axis=1), tasks)
    return table


def format_table(table: dict[str, dict[str, Any]]) -> str:
    df = pd.DataFrame(table).T
    return df.to_string(float_format=lambda v: f"{v:.3f}")
