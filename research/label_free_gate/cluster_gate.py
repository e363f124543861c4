"""Round 2 of the issue-13 study: moe2sim's gate (moe2sim/routing/gate.py) with a cluster prior. Not shipped:
selected on train cross-validation, it scored below the shipped gate on test (../issue13_label_free_gate.md).

The prior π_n(e) = Σ_t p(t | e) · A[t, n] of gate.py becomes π_n(e) = Σ_t p(t | e) · B[t, k_t(e), n]:
    k_t(e)     = nearest of task t's K_t centroids μ_tk (k-means on task t's train prompts; K_t = 1 is the task)
    B[t, k, n] = (s_tkn + m_t · A[t, n]) / (n_tk + m_t)   cluster k's train accuracy of expert n, shrunk to the
                                                         task's A[t, n] by m_t pseudo-prompts (empirical Bayes)
(K_t, m_t) are chosen per task by 5-fold CV on the task's train prompts (k = 1 accuracy under the rule; ties go
to fewer clusters, then to more shrinkage). Everything else (task head, residual, early stopping) is gate.py's:
`train_gate` fits the clusters, then calls gate.py's train_gate with this prior in place of the per-task one.
"""
from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch

import moe2sim.routing.gate as base


@dataclass
class TrainConfig(base.TrainConfig):
    max_clusters: int = 8      # largest K_t tried per task (1: gate.py's per-task prior)


CLUSTER_GRID = (1, 2, 3, 4, 8)
SHRINK_GRID = (5.0, 20.0, 50.0, 200.0)
MIN_PER_CLUSTER = 10      # a task gets at most n / 10 clusters


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50) -> np.ndarray:
    """(k, d) centroids: k-means++ seeding, then Lloyd's iterations (float64, deterministic under rng)."""
    x = np.asarray(x, np.float64)
    centers = [x[rng.integers(len(x))]]
    d2 = ((x - centers[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centers.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(axis=1))
    c = np.stack(centers)
    for _ in range(iters):
        label = nearest(x, c)
        new = np.stack([x[label == j].mean(axis=0) if (label == j).any() else c[j] for j in range(k)])
        if np.array_equal(new, c):
            break
        c = new
    return c


def nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return np.argmax(x @ centers.T - 0.5 * (centers ** 2).sum(axis=1), axis=1)


def cluster_table(x: np.ndarray, u: np.ndarray, k: int, shrinks: tuple[float, ...], rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Centroids (k, d) and, for each shrinkage m, each cluster's accuracy (k, N) shrunk to the task's by m
    pseudo-prompts."""
    prior = u.mean(axis=0).astype(np.float64)
    if k == 1:
        return x.mean(axis=0, keepdims=True).astype(np.float64), [prior[None, :] for _ in shrinks]
    centers = kmeans(x, k, rng)
    label = nearest(np.asarray(x, np.float64), centers)
    n = np.bincount(label, minlength=k)[:, None]
    sums = np.stack([u[label == j].sum(axis=0) for j in range(k)])
    return centers, [(sums + m * prior) / (n + m) for m in shrinks]


def choose_clusters(x: np.ndarray, u: np.ndarray, max_clusters: int, seed: int, folds: int = 5
                    ) -> tuple[int, float, float]:
    """(K, m, cross-validated k = 1 accuracy) for one task's prompts: the grid point with the best 5-fold
    accuracy; ties go to fewer clusters, then to more shrinkage."""
    grid = [k for k in CLUSTER_GRID if k <= min(max_clusters, len(x) // MIN_PER_CLUSTER)] or [1]
    if grid == [1]:
        return 1, SHRINK_GRID[-1], float(u[:, u.mean(axis=0).argmax()].mean())
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    score: dict[tuple[int, float], float] = {}
    for j in range(folds):
        fit, held = fold != j, fold == j
        for k in grid:
            shrinks = SHRINK_GRID if k > 1 else SHRINK_GRID[-1:]
            centers, tables = cluster_table(x[fit], u[fit], k, shrinks, np.random.default_rng(seed + j))
            where = nearest(np.asarray(x[held], np.float64), centers)
            for m, acc in zip(shrinks, tables):
                top = acc[where].argmax(axis=1)
                score[(k, m)] = score.get((k, m), 0.0) + float(u[held][np.arange(len(top)), top].sum())
    best = max(score, key=lambda km: (round(score[km], 9), -km[0], km[1]))
    return best[0], best[1], score[best] / len(x)


def fit_clusters(x: np.ndarray, u: np.ndarray, tasks: np.ndarray, names: list[str], max_clusters: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, list[float]]]:
    """Per task: (K_t, m_t) by cross-validation, then k-means on all its prompts. Returns the padded
    centroids (T, K, d), their scores' offsets (T, K; −inf for padding), the shrunk accuracies (T, K, N)
    and {task: [K_t, m_t, cross-validated accuracy]}."""
    tables, chosen = [], {}
    for i, t in enumerate(names):
        xt, ut = x[tasks == t], u[tasks == t]
        k, m, cv = choose_clusters(xt, ut, max_clusters, seed + 1000 * i)
        centers, (acc,) = cluster_table(xt, ut, k, (m,), np.random.default_rng(seed + 1000 * i))
        tables.append((centers, acc))
        chosen[t] = [k, m, round(cv, 6)]
    width = max(len(c) for c, _ in tables)
    centers = np.zeros((len(names), width, x.shape[1]))
    offset = np.full((len(names), width), -np.inf)
    acc = np.zeros((len(names), width, u.shape[1]))
    for i, (c, a) in enumerate(tables):
        centers[i, :len(c)], acc[i, :len(c)] = c, a
        offset[i, :len(c)] = -0.5 * (c ** 2).sum(axis=1)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return as_t(centers), as_t(offset), as_t(acc), chosen


class ClusterGateNet(base.GateNet):
    """gate.py's GateNet whose prior looks up the nearest cluster of each task."""

    def __init__(self, dim, task_acc, hidden, dropout, clusters):
        super().__init__(dim, task_acc, hidden, dropout)
        self.register_buffer("centroids", clusters[0])
        self.register_buffer("centroid_offset", clusters[1])
        self.register_buffer("cluster_acc", clusters[2])

    def prior(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        nearest_k = (torch.einsum("nd,tkd->ntk", x, self.centroids) + self.centroid_offset).argmax(dim=2)
        acc = self.cluster_acc[torch.arange(self.cluster_acc.shape[0])[None, :], nearest_k]   # (n, T, N)
        pi = (self.task_posterior(x, task)[:, :, None] * acc).sum(dim=1).clamp(base.PRIOR_CLIP, 1 - base.PRIOR_CLIP)
        return torch.log(pi) - torch.log1p(-pi)


def train_gate(x, tasks, u, x_val, tasks_val, u_val, experts, encoder, config: TrainConfig = TrainConfig()):
    """gate.py's train_gate with the cluster prior; info["clusters"] = {task: [K_t, m_t, CV accuracy]}."""
    names = list(dict.fromkeys(str(t) for t in tasks))
    *clusters, chosen = fit_clusters(x, u, np.asarray(tasks).astype(str), names, config.max_clusters, config.seed)
    net = lambda dim, task_acc, hidden, dropout: ClusterGateNet(dim, task_acc, hidden, dropout, clusters)  # noqa: E731
    with mock.patch.object(base, "GateNet", net):
        gate = base.train_gate(x, tasks, u, x_val, tasks_val, u_val, experts, encoder, config)
    gate.info["clusters"] = chosen
    return gate
