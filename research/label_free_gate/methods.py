"""Label-free routers compared in round 2 of the issue-13 study (fit_new_gate uses cluster_gate.py). Each
`fit_*` takes the train part (dict from common.load) and returns {variant name: function(x) -> (n,) expert index}."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from moe2sim.data.quality import validation_mask
from moe2sim.routing.gate import TrainConfig, train_gate

from .common import TASKS


def task_head(x: np.ndarray, tasks: np.ndarray, epochs: int = 300, lr: float = 0.05, wd: float = 1e-2, seed: int = 0):
    """The gate's linear task head (same optimiser and epochs as gate.py); returns predict(x) -> task index."""
    torch.manual_seed(seed)
    names = TASKS
    y = torch.as_tensor([names.index(t) for t in tasks])
    xt = torch.as_tensor(x)
    head = nn.Linear(x.shape[1], len(names))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(head(xt), y).backward()
        opt.step()
    head.requires_grad_(False)

    def predict(xq: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(head(torch.as_tensor(xq)), 1).numpy()
    return predict


def task_acc(p, tasks):
    return np.stack([p[tasks == t].mean(0) for t in TASKS])


def fit_prior(tr):
    post = task_head(tr["x"], tr["tasks"])
    A = task_acc(tr["p"], tr["tasks"])
    return {"prior (task posterior x per-task accuracy)": lambda x: (post(x) @ A).argmax(1)}, post, A


KNN_K = (5, 10, 20, 50, 100, 200)
KNN_W = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


def fit_knn_eb(tr, post=None, A=None):
    """kNN within the predicted task, shrunk to the task's accuracy: w * local mean + (1 - w) * A[t]."""
    if post is None:
        _, post, A = fit_prior(tr)
    by_task = {i: np.flatnonzero(tr["tasks"] == t) for i, t in enumerate(TASKS)}

    def variants():
        out = {}
        for k in KNN_K:
            for w in KNN_W:
                out[f"knn-EB k={k} w={w}"] = (k, w)
        return out

    cache = {}

    def local_means(x):
        key = id(x)
        if key not in cache:
            that = post(x).argmax(1)
            res = {k: np.empty((len(x), A.shape[1])) for k in KNN_K}
            for i in range(len(TASKS)):
                rows = np.flatnonzero(that == i)
                if not len(rows):
                    continue
                idx = by_task[i]
                sim = x[rows] @ tr["x"][idx].T
                order = np.argsort(-sim, axis=1)[:, :max(KNN_K)]
                for k in KNN_K:
                    res[k][rows] = tr["p"][idx][order[:, :k]].mean(1)
            cache.clear()
            cache[key] = (that, res)
        return cache[key]

    def make(k, w):
        def choose(x):
            that, res = local_means(x)
            return (w * res[k] + (1 - w) * A[that]).argmax(1)
        return choose
    return {name: make(k, w) for name, (k, w) in variants().items()}


CLUSTERS = (2, 4, 8, 16, 32)
SHRINK = (5, 20, 50, 200)


def fit_cluster_eb(tr, post=None, A=None, seed=0):
    """k-means per task; per-cluster accuracy shrunk to the task's with m pseudo-prompts."""
    from sklearn.cluster import KMeans
    if post is None:
        _, post, A = fit_prior(tr)
    models = {}
    for i, t in enumerate(TASKS):
        idx = np.flatnonzero(tr["tasks"] == t)
        for K in CLUSTERS:
            Kt = min(K, max(1, len(idx) // 10))
            km = KMeans(Kt, n_init=4, random_state=seed).fit(tr["x"][idx])
            lab = km.labels_
            n = np.bincount(lab, minlength=Kt)
            s = np.stack([tr["p"][idx][lab == c].sum(0) for c in range(Kt)])
            models[(i, K)] = (km.cluster_centers_, n, s)

    def make(K, m):
        def choose(x):
            that = post(x).argmax(1)
            out = np.empty(len(x), int)
            for i in range(len(TASKS)):
                rows = np.flatnonzero(that == i)
                if not len(rows):
                    continue
                cent, n, s = models[(i, K)]
                c = np.argmax(x[rows] @ cent.T - 0.5 * (cent ** 2).sum(1), axis=1)
                acc = (s[c] + m * A[i]) / (n[c][:, None] + m)
                out[rows] = acc.argmax(1)
            return out
        return choose
    return {f"cluster-EB K={K} m={m}": make(K, m) for K in CLUSTERS for m in SHRINK}


def fit_subject_eb(tr, post=None, A=None):
    """MMLU only: nearest subject centroid; that subject's accuracy shrunk to MMLU's with m pseudo-prompts."""
    if post is None:
        _, post, A = fit_prior(tr)
    mm = tr["tasks"] == "mmlu"
    subj = tr["subject"][mm]
    names = sorted(set(subj))
    cent = np.stack([tr["x"][mm][subj == s].mean(0) for s in names])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    n = np.array([(subj == s).sum() for s in names])
    s_ = np.stack([tr["p"][mm][subj == s].sum(0) for s in names])
    im = TASKS.index("mmlu")

    def make(m):
        def choose(x):
            that = post(x).argmax(1)
            out = A[that].argmax(1)
            rows = np.flatnonzero(that == im)
            c = np.argmax(x[rows] @ cent.T, axis=1)
            out[rows] = ((s_[c] + m * A[im]) / (n[c][:, None] + m)).argmax(1)
            return out
        return choose
    return {f"subject-EB (MMLU) m={m}": make(m) for m in (2, 5, 10, 20, 50, 100)}


def fit_residual(tr, seed=0, **cfg):
    """The shipped default: gate.py's train_gate on the CRC-32 fit part, early-stopped on its validation part."""
    val = validation_mask(tr["ids"])
    f, h = ~val, val
    g = train_gate(tr["x"][f], tr["tasks"][f], tr["p"][f], tr["x"][h], tr["tasks"][h], tr["p"][h],
                   [str(i) for i in range(tr["p"].shape[1])], "x", TrainConfig(seed=seed, **cfg))
    return {"residual MLP (current default)": lambda x: g.logits(x).argmax(1)}, g


def fit_residual_bag(tr, k=5, seed=0):
    """Ensemble over folds: k gates, each early-stopped on one fold of the train part; logits averaged."""
    from common import folds
    fo = folds(tr["tasks"], k, seed + 1000)
    gates = []
    for j in range(k):
        f, h = fo != j, fo == j
        gates.append(train_gate(tr["x"][f], tr["tasks"][f], tr["p"][f], tr["x"][h], tr["tasks"][h], tr["p"][h],
                                [str(i) for i in range(tr["p"].shape[1])], "x", TrainConfig(seed=seed + j)))
    return {f"residual MLP bagged over {k} folds": lambda x: np.mean([g.logits(x) for g in gates], 0).argmax(1)}


def _gate(tr, fit, hold, **cfg):
    from cluster_gate import TrainConfig, train_gate
    return train_gate(tr["x"][fit], tr["tasks"][fit], tr["p"][fit], tr["x"][hold], tr["tasks"][hold], tr["p"][hold],
                      [str(i) for i in range(tr["p"].shape[1])], "x", TrainConfig(**cfg))


def fit_new_gate(tr, seed=0, only_all_train=False):
    """gate.py round 2: per-task clusters with shrinkage, (K, m) by inner 5-fold CV."""
    val = validation_mask(tr["ids"])
    everything = np.ones(len(val), bool)
    b = _gate(tr, everything, val, seed=seed, max_epochs=0)
    out = {"cluster prior (all train)": lambda x: b.logits(x).argmax(1)}
    if only_all_train:
        return out
    a = _gate(tr, ~val, val, seed=seed, max_epochs=0)
    c = _gate(tr, ~val, val, seed=seed)
    return {"cluster prior (fit part, 80%)": lambda x: a.logits(x).argmax(1), **out,
            "cluster prior + residual (fit part, stop on val)": lambda x: c.logits(x).argmax(1)}
