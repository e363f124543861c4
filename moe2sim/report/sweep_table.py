"""A sweep's tables from its result rows (one per point and replication, experiments/sweep.py):

- `table`: per (point, method) each simulated metric's mean and, with R ≥ 2, its 95 % Student-t interval
  across replications (sweep.csv);
- `paired`: per point, baseline and metric, MoE² − baseline from the per-seed differences on common random
  numbers (same seed, same arrivals and prompts) with its 95 % Student-t interval (paired.csv);
- `comparison`, `versus_moe2`: the console's summaries of the test accuracy per method.
"""
from __future__ import annotations

import math
from typing import get_args

import pandas as pd

from moe2sim.report.intervals import t_interval
from moe2sim.scenario import SweepMethod

METHODS = get_args(SweepMethod)
# columns of sweep.csv even when no point is feasible (the rest depend on the categories and on `simulate`)
ALWAYS = ("axis", "value", "method", "energy_budget_J", "feasible", "reason", "within_budget", "subset", "size",
          "U_validation", "accuracy_test", "worst_energy_J")
KEY = ["axis", "value", "method"]


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(METHODS)}
    return df.sort_values(["axis", "method", "value"], key=lambda c: c.map(order) if c.name == "method" else c,
                          ignore_index=True, kind="stable")


def table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (axis, value, method): the point's columns, `replications`, and each simulated metric (sim_*) as its
    mean over replications, with `<metric>_low`/`_high`, the 95 % Student-t interval, when R ≥ 2."""
    sim = [c for c in rows.columns if c.startswith("sim_")]
    with_interval = rows.groupby(KEY, sort=False).size().max() >= 2
    out = []
    for _, g in rows.groupby(KEY, sort=False):
        row = {**g.iloc[0].drop(["replication", "seed", *sim]).to_dict(), "replications": len(g)}
        for c in sim:
            iv = t_interval(g[c].to_numpy(float))
            row[c] = iv.mean if iv else math.nan
            if with_interval:
                row[f"{c}_low"], row[f"{c}_high"] = (iv.low, iv.high) if iv and iv.n >= 2 else (math.nan, math.nan)
        out.append(row)
    df = pd.DataFrame(out)
    return _sorted(df.reindex(columns=[*df.columns, *(c for c in ALWAYS if c not in df.columns)]))


def paired(rows: pd.DataFrame, reference: str = "moe2") -> pd.DataFrame:
    """Per point, baseline and simulated metric: reference − baseline on common random numbers. The per-seed
    differences d_r (same seed, same arrivals and prompts) give diff_mean and its 95 % Student-t interval."""
    sim = [c for c in rows.columns if c.startswith("sim_")]
    out = []
    for (axis, value), g in rows.groupby(["axis", "value"], sort=False):
        ref = g[g["method"] == reference].set_index("seed")
        for method, b in g[g["method"] != reference].groupby("method", sort=False):
            b = b.set_index("seed")
            common = ref.index.intersection(b.index)
            for c in sim:
                iv = t_interval((ref.loc[common, c] - b.loc[common, c]).to_numpy(float))
                if iv is not None:
                    out.append({"axis": axis, "value": value, "method": reference, "baseline": method, "metric": c,
                                "diff_mean": iv.mean, "low": iv.low if iv.n >= 2 else math.nan,
                                "high": iv.high if iv.n >= 2 else math.nan, "n": iv.n})
    cols = ["axis", "value", "method", "baseline", "metric", "diff_mean", "low", "high", "n"]
    return pd.DataFrame(out, columns=cols)


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per axis and method: mean test accuracy over the points where the method's subset keeps the budgets."""
    feasible = df[df["feasible"].fillna(False).astype(bool) & df["within_budget"].fillna(False).astype(bool)]
    out = feasible.groupby(["axis", "method"], sort=False)["accuracy_test"].mean().unstack("method")
    return out.reindex(columns=[m for m in METHODS if m in out.columns])


def versus_moe2(df: pd.DataFrame, tie: float = 0.0005) -> pd.DataFrame:
    """Per axis and baseline, over the budget points where both MoE² and the baseline keep the budgets:
    mean test accuracy of each, MoE²'s wins / ties (|difference| < `tie`) / losses, and its best margin."""
    kept = df[df["feasible"] & df["within_budget"].fillna(False).astype(bool)]
    acc = kept.pivot_table(index=["axis", "value"], columns="method", values="accuracy_test")
    if "moe2" not in acc.columns:
        return pd.DataFrame()
    rows = []
    for method in [m for m in METHODS if m in acc.columns and m != "moe2"]:
        for axis in acc.index.get_level_values("axis").unique():
            both = acc.loc[axis, ["moe2", method]].dropna()
            if both.empty:
                continue
            diff = both["moe2"] - both[method]
            rows.append({"axis": axis, "baseline": method, "points": len(both), "moe2": both["moe2"].mean(),
                         "baseline_mean": both[method].mean(), "wins": int((diff >= tie).sum()),
                         "ties": int((diff.abs() < tie).sum()), "losses": int((diff <= -tie).sum()),
                         "best_margin": float(diff.max())})
    return pd.DataFrame(rows)
