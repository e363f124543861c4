"""Confidence intervals for the metrics of a summary: across replications, or by batch means within one run.

Estimators (95 % two-sided by default):
- **Replications** (`t_interval`): R independent runs give values x_1..x_R of a metric; the interval is
  x̄ ± t_{R-1, 0.975} · s / √R with s the sample standard deviation (Student t). Exact for normal x_i,
  asymptotically right otherwise (each x_i is itself an average over many queries).
- **Paired differences** (`t_interval` of d_r = a_r − b_r): two methods run on common random numbers
  (the same seed, hence the same arrivals and prompts, in replication r); the differences are
  independent across r, and their variance is usually far below that of a_r or b_r alone.
- **Batch means** (`batch_means`): one run; the per-query records (in arrival order) after a warm-up
  fraction are cut into k consecutive batches of equal size; a metric's batch values y_1..y_k are
  treated as independent and the interval is ȳ ± t_{k-1, 0.975} · s_y / √k. Valid when batches are
  much longer than the correlation time of the queue. Only metrics of the queries themselves (means,
  rates, quantiles of per-query values) have batch values; totals over the run and per-expert
  figures need replications. For a quantile the batch values are the batches' quantiles, so the
  centre is the mean of batch quantiles (slightly biased for small batches).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

LEVEL = 0.95


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile (p in (0.5, 1)) of Student's t with `df` degrees of freedom: bisection on the CDF,
    itself Simpson's rule over the density (no SciPy needed; error < 1e-8 for df ≥ 1, p ≤ 0.9995)."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 4001)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
        h = t / 4000
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided interval at `level` from n values (low = high = mean when n = 1)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def t_interval(values: Iterable[float], level: float = LEVEL) -> Interval | None:
    """x̄ ± t_{n-1,(1+level)/2} · s/√n over the finite values; None if there are none."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) == 0:
        return None
    mean = float(x.mean())
    if len(x) == 1:
        return Interval(mean, mean, mean, 1, level)
    half = student_t_quantile((1 + level) / 2, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(mean, mean - half, mean + half, len(x), level)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a summary as "a.b.c" -> value (booleans and strings left out; None kept as NaN)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif value is None:
            out[name] = math.nan
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def across(values: list[Mapping[str, float]], level: float = LEVEL) -> dict[str, dict[str, float | int]]:
    """Per metric name (the union over `values`), the t interval of its values; metrics never finite are left out."""
    names = list(dict.fromkeys(k for v in values for k in v))
    out = {}
    for name in names:
        iv = t_interval((v.get(name, math.nan) for v in values), level)
        if iv is not None:
            out[name] = iv.as_dict()
    return out


def batch_means(queries: pd.DataFrame, metrics: Callable[[pd.DataFrame], Mapping[str, Any]], batches: int = 20,
                warmup: float = 0.05, level: float = LEVEL) -> dict[str, dict[str, float | int]]:
    """Batch-means intervals of every metric `metrics(records)` gives (flattened), over `batches` consecutive
    batches of the queries in arrival order after dropping the first `warmup` fraction."""
    ordered = queries.sort_values("arrival_s", kind="stable")
    kept = ordered.iloc[int(len(ordered) * warmup):]
    if len(kept) < 2 * batches:
        return {}
    cuts = np.array_split(np.arange(len(kept)), batches)
    return across([flatten(metrics(kept.iloc[idx])) for idx in cuts], level)
