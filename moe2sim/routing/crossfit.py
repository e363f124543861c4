"""Cross-fitted gate logits: every train prompt scored by a gate that did not train on it.

The train split's prompts are dealt into K folds (per task, in a seeded random order, so every fold
has each task's share). For fold f, a gate is trained on the other folds (early-stopped on their
validation part, data.quality.validation_mask) and scores fold f's prompts, from the prompt alone and
with the task label. The whole train split then estimates U(S) out of sample (selection/estimate.py),
instead of the validation fifth alone. Saved as an .npz next to the gate:
    prompt_id (n,), fold (n,), experts (N,), logits (n, N), logits_task_label (n, N), folds, fold_seed
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moe2sim.data.atomic import atomic_path
from moe2sim.data.embeddings import ENCODER
from moe2sim.data.quality import validation_mask
from moe2sim.errors import InputError

if TYPE_CHECKING:
    from moe2sim.routing.gate import TrainConfig

FIELDS = ("prompt_id", "fold", "experts", "logits", "logits_task_label", "folds", "fold_seed")


def assign_folds(tasks: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each prompt: each task's prompts in a seeded random order, dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(tasks), np.int64)
    for task in dict.fromkeys(tasks):
        rows = rng.permutation(np.flatnonzero(tasks == task))
        fold[rows] = np.arange(len(rows)) % folds
    return fold


@dataclass(frozen=True)
class CrossFit:
    prompt_id: np.ndarray           # (n,) train prompts
    fold: np.ndarray                # (n,) the fold each prompt was scored in
    experts: list[str]              # column order of the logits
    logits: np.ndarray              # (n, N) from the prompt alone, by the gate that did not see the prompt
    logits_task_label: np.ndarray   # (n, N) the same gates given the task label
    folds: int
    fold_seed: int

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, prompt_id=self.prompt_id.astype(str), fold=self.fold,
                                experts=np.asarray(self.experts, str), logits=self.logits.astype(np.float32),
                                logits_task_label=self.logits_task_label.astype(np.float32),
                                folds=np.int64(self.folds), fold_seed=np.int64(self.fold_seed))

    @classmethod
    def load(cls, path: Path) -> "CrossFit":
        if not path.is_file():
            raise InputError(path, None, "cross-fitted logits not found (make them with "
                                         "`moe2sim train-gate --cross-fit K --out FILE.npz`)")
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in FIELDS}
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(path, None, f"not a cross-fit file (.npz with {', '.join(FIELDS)}): {exc}") from None
        return cls(d["prompt_id"].astype(str), d["fold"], d["experts"].astype(str).tolist(), d["logits"],
                   d["logits_task_label"], int(d["folds"]), int(d["fold_seed"]))

    def rows(self, path: Path, prompt_ids: np.ndarray, experts: list[str], task_label: bool) -> np.ndarray:
        """(len(prompt_ids), len(experts)) logits aligned to these prompts and experts; errors name the file."""
        index = {p: i for i, p in enumerate(self.prompt_id)}
        missing = [p for p in prompt_ids if p not in index]
        if missing:
            raise InputError(path, "prompt_id", f"{len(missing)} train prompts were not cross-fitted, "
                                                f"e.g. '{missing[0]}' (rebuild it on this data)")
        absent = [m for m in experts if m not in self.experts]
        if absent:
            raise InputError(path, "experts", f"cross-fitted without model(s) {absent}")
        logits = self.logits_task_label if task_label else self.logits
        return logits[np.ix_([index[p] for p in prompt_ids], [self.experts.index(m) for m in experts])]


def cross_fit(x: np.ndarray, tasks: np.ndarray, u: np.ndarray, prompt_ids: np.ndarray, experts: list[str],
              config: "TrainConfig", folds: int = 5, fold_seed: int = 0) -> CrossFit:
    """K gates, each trained on K − 1 folds (early-stopped on their validation part), scoring the held-out fold."""
    from moe2sim.routing.gate import train_gate  # torch is imported only to train

    fold = assign_folds(tasks, folds, fold_seed)
    val = validation_mask(prompt_ids)
    logits = np.empty(u.shape, np.float32)
    labelled = np.empty(u.shape, np.float32)
    for f in range(folds):
        fit, hold, out = (fold != f) & ~val, (fold != f) & val, fold == f
        gate = train_gate(x[fit], tasks[fit], u[fit], x[hold], tasks[hold], u[hold], experts, ENCODER, config)
        logits[out], labelled[out] = gate.logits(x[out]), gate.logits(x[out], tasks[out])
    return CrossFit(np.asarray(prompt_ids, str), fold, list(experts), logits, labelled, folds, fold_seed)
