"""Scores the variants of run_cv.py on the TEST split (fit on the whole train split, as each procedure does).
The selected one is the one run_cv.py ranked first on train; the others are printed for the record.
Usage: python score_test.py"""
from __future__ import annotations

import time

import numpy as np

from .common import TASKS, load, mean_se, paired_se, task_means
from . import methods as M

tr, te = load("train"), load("test")
rows = np.arange(len(te["tasks"]))
fitted, secs = {}, {}
for name, fit in (("prior", lambda: M.fit_prior(tr)[0]), ("residual", lambda: M.fit_residual(tr)[0]),
                  ("new", lambda: M.fit_new_gate(tr)),
                  ("bag", lambda: M.fit_residual_bag(tr)),
                  ("top of the first CV (sklearn k-means / kNN, one setting for all tasks)", lambda: {
                      k: v for k, v in {**M.fit_cluster_eb(tr), **M.fit_knn_eb(tr)}.items()
                      if k in ("cluster-EB K=2 m=5", "cluster-EB K=2 m=20", "knn-EB k=5 w=0.1", "knn-EB k=5 w=0.2")})):
    s = time.time()
    fitted.update(fit())
    secs[name] = time.time() - s
pc = {name: te["p"][rows, fn(te["x"])] for name, fn in fitted.items()}
base = "prior (task posterior x per-task accuracy)"
for name, v in pc.items():
    m, se = mean_se(v, te["tasks"])
    d, dse = paired_se(v, pc[base], te["tasks"])
    tm = task_means(v, te["tasks"])
    print(f"{name:50s} " + " ".join(f"{100 * tm[t]:6.2f}" for t in TASKS) +
          f"  mean {100 * m:6.2f} ± {100 * se:.2f}  vs prior {100 * d:+.2f} ± {100 * dse:.2f}")
print({k: round(v, 1) for k, v in secs.items()})
