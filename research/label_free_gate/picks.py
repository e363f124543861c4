"""Which (K_t, m_t) cluster_gate.py's inner CV picks per task: on all of train, and in each outer CV fold
(the folds of run_cv.py). Usage: python picks.py > picks_output.txt"""
import numpy as np

from .cluster_gate import choose_clusters
from .common import TASKS, folds, load

tr = load("train")
for i, t in enumerate(TASKS):
    sel = tr["tasks"] == t
    print("all train", t, choose_clusters(tr["x"][sel], tr["p"][sel], 8, 0 + 1000 * i)[:2], flush=True)
for r in range(3):
    fo = folds(tr["tasks"], 5, seed=r)
    for j in range(5):
        part = fo != j
        picks = {t: choose_clusters(tr["x"][part & (tr["tasks"] == t)], tr["p"][part & (tr["tasks"] == t)], 8,
                                    r + 1000 * i)[:2] for i, t in enumerate(TASKS)}
        print(f"repeat {r} fold {j}", picks, flush=True)
