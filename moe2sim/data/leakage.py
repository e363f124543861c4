"""Declared overlap between an expert's training data and a task's train split, and U(S) without its bias.

A leak is a (model, task) whose fine-tuning data was built from the task's training questions (cited in
the table, e.g. traces/leakage.csv). On those prompts the expert's measured accuracy flatters it: the
train split is where U(S) is estimated, the test split was never seen. Correction: where the table gives
a non-leaked accuracy ā (published on the task's test set, cited), the expert's P(right) on the task's
train prompts is scaled by ā / m̄ (m̄ its measured mean there; only ever down, so ā ≥ m̄ changes
nothing): the prompts keep their ranking, the mean is the non-leaked one. A leak with no such figure is
declared and reported, not corrected.

Columns: model, task, kind (direct | indirect), evidence, source, non_leaked_accuracy (empty: none),
non_leaked_source.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.errors import InputError

COLUMNS = ["model", "task", "kind", "evidence", "source", "non_leaked_accuracy", "non_leaked_source"]


@dataclass(frozen=True)
class Leak:
    model: str
    task: str
    kind: str
    source: str
    non_leaked_accuracy: float | None


def read_leakage(path: Path) -> list[Leak]:
    """The declared leaks; errors name the file and the field."""
    if not path.is_file():
        raise InputError(path, None, "leakage table not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise InputError(path, missing[0], f"missing column(s) {missing}; expected {COLUMNS}")
    leaks = []
    for i, row in table.iterrows():
        text = row["non_leaked_accuracy"].strip()
        try:
            accuracy = float(text) if text else None
        except ValueError:
            raise InputError(path, "non_leaked_accuracy", f"row {i + 1}: '{text}' is not a number") from None
        if accuracy is not None and not 0 <= accuracy <= 1:
            raise InputError(path, "non_leaked_accuracy", f"row {i + 1}: {accuracy} is not in [0, 1]")
        leaks.append(Leak(row["model"], row["task"], row["kind"], row["source"], accuracy))
    return leaks


def without_leaks(p: np.ndarray, tasks: np.ndarray, experts: list[str], leaks: list[Leak]) -> np.ndarray:
    """P(right) (n, N) of train prompts with each corrected leak's cell scaled to its non-leaked mean."""
    p = p.copy()
    for leak in leaks:
        rows = tasks == leak.task
        if leak.non_leaked_accuracy is None or leak.model not in experts or not rows.any():
            continue
        j = experts.index(leak.model)
        measured = p[rows, j].mean()
        if measured > leak.non_leaked_accuracy:
            p[rows, j] *= leak.non_leaked_accuracy / measured
    return p
