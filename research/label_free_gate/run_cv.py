"""Repeated, task-stratified 5-fold CV on the TRAIN split only; out-of-fold k=1 accuracy under the published
rule for every variant. Usage: python run_cv.py [--repeats 3] [--bag] [--out cv.json]"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from .common import TASKS, folds, load, mean_se, paired_se, task_means
from . import methods as M

ap = argparse.ArgumentParser()
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--k", type=int, default=5)
ap.add_argument("--bag", action="store_true")
ap.add_argument("--only", default="prior,knn,cluster,subject,residual")
ap.add_argument("--out", default="cv.json")
args = ap.parse_args()
only = set(args.only.split(","))

tr = load("train")
n = len(tr["tasks"])
choices: dict[str, np.ndarray] = {}
times: dict[str, float] = {}
t0 = time.time()
for r in range(args.repeats):
    fo = folds(tr["tasks"], args.k, seed=r)
    for j in range(args.k):
        part = {key: (v[fo != j] if isinstance(v, np.ndarray) else v) for key, v in tr.items()}
        xq = tr["x"][fo == j]
        fitted = {}
        s = time.time(); prior, post, A = M.fit_prior(part); times["prior"] = times.get("prior", 0) + time.time() - s
        fitted.update(prior)
        if "knn" in only:
            s = time.time(); fitted.update(M.fit_knn_eb(part, post, A)); times["knn"] = times.get("knn", 0) + time.time() - s
        if "cluster" in only:
            s = time.time(); fitted.update(M.fit_cluster_eb(part, post, A, seed=r)); times["cluster"] = times.get("cluster", 0) + time.time() - s
        if "subject" in only:
            s = time.time(); fitted.update(M.fit_subject_eb(part, post, A)); times["subject"] = times.get("subject", 0) + time.time() - s
        if "residual" in only:
            s = time.time(); fitted.update(M.fit_residual(part, seed=r)[0]); times["residual"] = times.get("residual", 0) + time.time() - s
        if "newall" in only:
            s = time.time(); fitted.update(M.fit_new_gate(part, seed=r, only_all_train=True)); times["new"] = times.get("new", 0) + time.time() - s
        elif "new" in only:
            s = time.time(); fitted.update(M.fit_new_gate(part, seed=r)); times["new"] = times.get("new", 0) + time.time() - s
        if args.bag:
            s = time.time(); fitted.update(M.fit_residual_bag(part, seed=r)); times["bag"] = times.get("bag", 0) + time.time() - s
        for name, fn in fitted.items():
            choices.setdefault(name, np.zeros((args.repeats, n), int))[r, fo == j] = fn(xq)
    print(f"repeat {r} done {time.time() - t0:.0f}s", flush=True)

rows = np.arange(n)
base = "prior (task posterior x per-task accuracy)"
pc = {name: tr["p"][rows[None, :], c].mean(0) for name, c in choices.items()}  # per prompt, mean over repeats
result = {}
for name in choices:
    per_rep = [mean_se(tr["p"][rows, choices[name][r]], tr["tasks"])[0] for r in range(args.repeats)]
    m, se = mean_se(pc[name], tr["tasks"])
    d, dse = paired_se(pc[name], pc[base], tr["tasks"])
    result[name] = dict(mean=m, se=se, rep_sd=float(np.std(per_rep)), diff_vs_prior=d, diff_se=dse,
                        **task_means(pc[name], tr["tasks"]))
order = sorted(result, key=lambda k: -result[k]["mean"])
for name in order:
    v = result[name]
    print(f"{name:45s} " + " ".join(f"{100 * v[t]:6.2f}" for t in TASKS) +
          f"  mean {100 * v['mean']:6.2f} ± {100 * v['se']:.2f}  vs prior {100 * v['diff_vs_prior']:+.2f} ± {100 * v['diff_se']:.2f}")
print({k: round(v, 1) for k, v in times.items()}, f"total {time.time() - t0:.0f}s")
json.dump({"result": result, "times": times, "repeats": args.repeats, "k": args.k}, open(args.out, "w"), indent=1)
