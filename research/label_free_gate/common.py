"""Shared pieces of the issue-13 label-free gate study (round 2): data, the metric, CV folds."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)

from moe2sim.routing.evaluation import GateData  # noqa: E402

TRACES = Path(__file__).resolve().parents[2] / "traces"
DATA = Path(os.environ.get("STUDY_DATA", TRACES))   # another embeddings.npz beside the same prompts and scores
TASKS = ["mmlu", "gsm8k", "arc_challenge", "humaneval"]


def load(split: str):
    d = GateData.load(DATA, split)
    prompts = pd.read_parquet(TRACES / "prompts.parquet").set_index("prompt_id")
    ids = np.asarray(d.quality.prompt_ids).astype(str)
    meta = prompts.loc[ids]
    return dict(x=d.x.astype(np.float32), tasks=np.asarray(d.tasks).astype(str), p=d.p, ids=ids,
                subject=meta["subject"].astype(str).to_numpy(), text=meta["question"].astype(str).to_numpy(),
                experts=list(d.quality.experts))


def task_means(pc: np.ndarray, tasks: np.ndarray) -> dict[str, float]:
    return {t: float(pc[tasks == t].mean()) for t in TASKS}


def mean_se(pc: np.ndarray, tasks: np.ndarray) -> tuple[float, float]:
    """Mean over tasks and the repo's SE: sqrt(sum_t (Var(p)+E[p(1-p)])/n_t)/4."""
    m = np.mean([pc[tasks == t].mean() for t in TASKS])
    var = sum((pc[tasks == t].var() + (pc[tasks == t] * (1 - pc[tasks == t])).mean()) / (tasks == t).sum()
              for t in TASKS)
    return float(m), float(np.sqrt(var) / 4)


def paired_se(a: np.ndarray, b: np.ndarray, tasks: np.ndarray) -> tuple[float, float]:
    """Difference of task means (a - b) with the SE of the paired per-prompt difference."""
    d = a - b
    m = np.mean([d[tasks == t].mean() for t in TASKS])
    var = sum(d[tasks == t].var() / (tasks == t).sum() for t in TASKS)
    return float(m), float(np.sqrt(var) / 4)


def folds(tasks: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per prompt, stratified by task."""
    rng = np.random.default_rng(seed)
    f = np.empty(len(tasks), int)
    for t in np.unique(tasks):
        idx = np.flatnonzero(tasks == t)
        rng.shuffle(idx)
        f[idx] = np.arange(len(idx)) % k
    return f
