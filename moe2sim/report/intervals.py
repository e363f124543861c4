"""Confidence intervals for the metrics of a summary: across replications, or by batch means within one run.

Estimators (95 % two-sided by default):
- **Replications** (`t_interval`): R independent runs give values x_1..x_R of a metric; the interval is
  x̄ ± t_{R-1, 0.975} · s / √R with s the sample standard deviation (Student t). Exact for normal x_i,
  asymptotically right otherwise (each x_i is itself an average over many queries).
- **Paired differences** (`t_interval` of d_r = a_r − b_r): two methods run on common random numbers
  (the same seed, hence the same arrivals and prompts, in replication r); the differences are
  independent across r, and their variance is usually far below that of a_r or b_r alone.
- **Batch means**: one run's per-query records (in arrival order, after a warm-up) cut into k consecutive
  batches; a metric's batch values y_1..y_k are treated as independent, valid when batches are much longer
  than the correlation time of the queue. Only metrics of the queries themselves (means, rates, quantiles
  of per-query values) have batch values; totals over the run and per-expert figures need replications.
- **Sectioning** (`sectioned`; Asmussen & Glynn, *Stochastic Simulation*, 2007, §III.5a): the same
  batches give the spread, but the centre is the whole run's estimate θ̂ (a quantile of all kept
  queries): θ̂ ± t_{k-1, 0.975} · s_y / √k. The point estimate is then unbiased as the run's own, and
  the interval says when it cannot be trusted (`reliable: false` with `why`): batch values whose lag-1
  autocorrelation is significant (r₁ > 2/√k: batches shorter than the queue's memory, the interval too
  narrow), or a quantile q with fewer than TAIL_MIN queries beyond it per batch.
- **Warm-up** (`mser_cut`): MSER-5 (White 1997; Hoad, Robinson & Davies 2010): the truncation point d
  (in batches of 5 queries, in the first half of the run) minimising the standard error of the mean of
  what is left, Σ(y_i − ȳ_d)² / (n − d)²; the number of queries dropped is stated in the summary.
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


TAIL_MIN = 5  # queries beyond a quantile per batch, below which a batch quantile is not a usable sample
BATCH_TAUS = 10  # a batch spans at least this many autocorrelation times of the latencies
MIN_BATCHES = 5


def quantile_level(name: str) -> float | None:
    """The level q of a flattened quantile metric ("…latency_s.p95" -> 0.95), None for other metrics."""
    last = name.rsplit(".", 1)[-1]
    return int(last[1:]) / 100 if last[:1] == "p" and last[1:].isdigit() else None


def mser_cut(values: np.ndarray, block: int = 5) -> int:
    """MSER-5: how many leading values to drop as warm-up (a multiple of `block`, at most half the run)."""
    n_blocks = len(values) // block
    if n_blocks < 4:
        return 0
    y = np.asarray(values[:n_blocks * block], float).reshape(n_blocks, block).mean(axis=1)
    best, cut = math.inf, 0
    for d in range(n_blocks // 2 + 1):
        rest = y[d:]
        score = float(((rest - rest.mean()) ** 2).sum()) / len(rest) ** 2
        if score < best:
            best, cut = score, d
    return cut * block


def autocorrelation_time(x: np.ndarray, c: float = 5.0) -> float:
    """Integrated autocorrelation time τ = 1 + 2 Σ_{t≥1} ρ(t) of a series, with Sokal's automatic window (the
    sum stops at the first lag W ≥ c·τ(W)); 1 for an independent series. n/τ is its effective sample size."""
    y = np.asarray(x, float) - np.mean(x)
    n = len(y)
    if n < 4 or not np.any(y):
        return 1.0
    f = np.fft.rfft(y, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    acf /= acf[0]
    tau = 2 * np.cumsum(acf) - 1
    window = np.flatnonzero(np.arange(n) >= c * tau)
    return float(max(1.0, tau[window[0]] if len(window) else tau[-1]))


def relaxation_queries(load: float) -> float:
    """The relaxation time of a queue at utilisation ρ in served queries, 1/(1 − √ρ)² (M/M/1's, Morse 1955;
    Cohen, *The Single Server Queue*): how long a run remembers a busy spell. A lower bound on the
    autocorrelation time that a short run's own estimate cannot see (it is biased low by about half at
    ρ = 0.8 and 2,000 queries)."""
    return 1.0 / (1.0 - math.sqrt(min(max(load, 0.0), 0.999))) ** 2


def sectioned(queries: pd.DataFrame, metrics: Callable[[pd.DataFrame], Mapping[str, Any]], batches: int = 20,
              warmup: float | str = 0.05, level: float = LEVEL, load: float = 0.0) -> dict[str, dict[str, Any]]:
    """Sectioning intervals of every metric `metrics(records)` gives (flattened): centre the whole kept run's
    value; half-width t_{k-1} · s / √k from k consecutive batches (arrival order). k is at most `batches`,
    and at most n / (BATCH_TAUS · τ) so that each batch spans several autocorrelation times τ of the
    latencies (batches shorter than the queue's memory make the interval too narrow); for a quantile q, also
    at most n (1 − q) / TAIL_MIN so each batch holds TAIL_MIN queries beyond it. Where that leaves fewer than
    MIN_BATCHES batches, k = MIN_BATCHES and the entry is flagged `reliable: false` with `why`.
    τ is the larger of the latencies' own estimate and relaxation_queries(`load`), the busiest server's
    utilisation. `warmup`: the fraction of queries to drop, or "mser" (MSER-5 on latency)."""
    ordered = queries.sort_values("arrival_s", kind="stable")
    latency = ordered["latency_s"].to_numpy(float)
    drop = mser_cut(latency) if warmup == "mser" else int(len(ordered) * float(warmup))
    kept = ordered.iloc[drop:]
    n = len(kept)
    if n < 2 * MIN_BATCHES:
        return {}
    tau = max(autocorrelation_time(latency[drop:]), relaxation_queries(load))
    whole = flatten(metrics(kept))
    wanted = {name: min(batches, int(n / (BATCH_TAUS * tau)),
                        int(n * (1 - q)) // TAIL_MIN if (q := quantile_level(name)) else batches) for name in whole}
    counts = {name: max(MIN_BATCHES, k) for name, k in wanted.items()}
    parts = {k: [flatten(metrics(kept.iloc[idx])) for idx in np.array_split(np.arange(n), k)]
             for k in set(counts.values())}
    out: dict[str, dict[str, Any]] = {}
    for name, centre in whole.items():
        k = counts[name]
        y = np.asarray([p.get(name, math.nan) for p in parts[k]], float)
        if not np.isfinite(centre) or not np.isfinite(y).all():
            continue
        half = student_t_quantile((1 + level) / 2, k - 1) * float(y.std(ddof=1)) / math.sqrt(k)
        why = []
        if n / (BATCH_TAUS * tau) < MIN_BATCHES:
            why.append(f"{n / tau:.0f} effective samples (autocorrelation time {tau:.0f} queries): run longer")
        q = quantile_level(name)
        if q is not None and n * (1 - q) / k < TAIL_MIN:
            why.append(f"{n * (1 - q) / k:.1f} queries beyond the p{round(100 * q)} per batch (< {TAIL_MIN})")
        out[name] = {"mean": centre, "low": centre - half, "high": centre + half, "n": k,
                     "reliable": not why, "why": "; ".join(why) or None, "warmup_queries": drop}
    return out
