"""Would another law in n predict a held-out concurrency level better than the shared-device law's
straight line? Leave-one-concurrency-out (LOCO) on the shipped CPU trace, the way
benchmarks/bench_fidelity.py scores the law, for:

- linear (the law: moe2sim.devices.concurrency.fit_concurrency): slowdown 1 + β (n − 1) per phase;
- saturating: 1 + β (n − 1) / (1 + γ (n − 1)), γ ≥ 0 shared by both phases (γ = 0 is linear);
- power: 1 + β (n − 1)^α, α in [0.3, 2] shared by both phases (α = 1 is linear);
- context-aware decode: decode slowdown 1 + (β_d + κ · p / 1000)(n − 1), κ ≥ 0 — each step of a batched
  decode also reads the other requests' KV caches, which grow with their prompts (p: this trace's n
  requests are equal, so p is every running request's prompt); prefill linear (κ = 0 is the law);
- piecewise: the law's batch-1 values, times each measured level's own slowdown (relative least
  squares per level and phase), interpolated linearly in n between the measured levels around the
  held-out one, the linear law outside the measured range;
- per-level (not a prediction: every level's own slowdown fitted with that level in the data): what a
  law exact at every n would still miss — the shape-to-shape scatter the one-parameter-per-phase form
  in n cannot remove, whatever its curve.

The laws with a third parameter minimise squared relative error, as fit_concurrency does (scipy
least_squares from the linear fit, all parameters refitted jointly). Research code. Since it was run
(RESULTS.md, issue 14), moe2sim's law took up two of its findings: fit_concurrency now chooses the
"tokens" prefill law and keeps the context term κ where they cut the error by ≥ 20 %, so the "linear"
row of a rerun is the current law, not the plain straight line.

    python -m research.concurrency_laws.study        (from the repository root)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from moe2sim.devices.concurrency import fit_concurrency

TRACE = Path(__file__).resolve().parents[2] / "traces" / "devices" / "cpu_concurrency.csv"
Predict = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]


def arrays(rows: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(rows[c].to_numpy(float) for c in ("prompt_tokens", "output_tokens", "concurrency"))


def linear(train: pd.DataFrame) -> Predict:
    law = fit_concurrency(train)
    return lambda rows: law.predict(*arrays(rows))


Slowdowns = Callable[[float, float, float, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def nonlinear(slowdowns: Slowdowns, start: float, bounds: tuple[float, float]):
    """A law with one more parameter θ: slowdowns(β_p, β_d, θ, prompt_tokens, n − 1) -> (prefill, decode)."""

    def make(train: pd.DataFrame) -> Predict:
        law = fit_concurrency(train)
        p, o, n = arrays(train)
        observed = np.r_[train["ttft_s"].to_numpy(float), train["decode_s"].to_numpy(float)]

        def model(x: np.ndarray, p: np.ndarray, o: np.ndarray, n: np.ndarray):
            base, inv_prefill, inv_decode, beta_p, beta_d, theta = x
            slow_p, slow_d = slowdowns(beta_p, beta_d, theta, p, n - 1)
            return (base + p * inv_prefill) * slow_p, o * inv_decode * slow_d

        x0 = [law.ttft_base_s, 1 / law.prefill_tokens_per_s, 1 / law.decode_tokens_per_s,
              law.beta_prefill, law.beta_decode, start]
        fit = least_squares(lambda x: np.r_[model(x, p, o, n)] / observed - 1, x0,
                            bounds=([0, 0, 0, 0, 0, bounds[0]], [np.inf] * 5 + [bounds[1]]))
        return lambda rows: model(fit.x, *arrays(rows))

    return make


def level_slowdowns(train: pd.DataFrame, law) -> dict[float, tuple[float, float]]:
    """Each level's (prefill, decode) slowdown against the law's batch-1 values, by relative least squares."""
    out = {}
    for n, rows in train.groupby("concurrency"):
        p, o, _ = arrays(rows)
        one = law.predict(p, o, np.ones(len(rows)))
        ratios = [x / y for x, y in zip(one, (rows["ttft_s"].to_numpy(float), rows["decode_s"].to_numpy(float)))]
        out[float(n)] = tuple(float(r.sum() / (r ** 2).sum()) for r in ratios)
    return out


def piecewise(train: pd.DataFrame) -> Predict:
    law = fit_concurrency(train)
    slow = level_slowdowns(train, law)
    levels = np.array(sorted(slow))

    def predict(rows: pd.DataFrame):
        p, o, n = arrays(rows)
        if n.min() < levels.min() or n.max() > levels.max():
            return law.predict(p, o, n)
        one = law.predict(p, o, np.ones(len(rows)))
        return tuple(base * np.interp(n, levels, [slow[k][phase] for k in levels]) for phase, base in enumerate(one))

    return predict


LAWS: dict[str, Callable[[pd.DataFrame], Predict]] = {
    "linear (the law)": linear,
    "saturating 1 + β(n−1)/(1 + γ(n−1))": nonlinear(
        lambda bp, bd, g, p, m: (1 + bp * m / (1 + g * m), 1 + bd * m / (1 + g * m)), 0.0, (0.0, 10.0)),
    "power 1 + β(n−1)^α": nonlinear(lambda bp, bd, a, p, m: (1 + bp * m ** a, 1 + bd * m ** a), 1.0, (0.3, 2.0)),
    "context-aware decode 1 + (β_d + κ·p/1000)(n−1)": nonlinear(
        lambda bp, bd, k, p, m: (1 + bp * m, 1 + (bd + k * p / 1000) * m), 0.0, (0.0, np.inf)),
    "piecewise in n (linear outside)": piecewise,
}


def loco(trace: pd.DataFrame, make: Callable[[pd.DataFrame], Predict]) -> tuple[np.ndarray, np.ndarray]:
    latency, ttft = np.empty(len(trace)), np.empty(len(trace))
    for _, held in trace.groupby("concurrency"):
        t, d = make(trace.drop(held.index))(held)
        latency[held.index], ttft[held.index] = t + d, t
    return latency, ttft


def per_level(trace: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    law = fit_concurrency(trace)
    slow = level_slowdowns(trace, law)
    p, o, n = arrays(trace)
    t, d = law.predict(p, o, np.ones(len(trace)))
    t = t * np.array([slow[k][0] for k in n])
    return t + d * np.array([slow[k][1] for k in n]), t


def line(name: str, trace: pd.DataFrame, latency: np.ndarray, ttft: np.ndarray) -> str:
    real = (trace["ttft_s"] + trace["decode_s"]).to_numpy()
    err = (latency - real) / real * 100
    ttft_err = np.abs(ttft - trace["ttft_s"].to_numpy()) / trace["ttft_s"].to_numpy() * 100
    levels = " / ".join(f"{np.abs(err[trace['concurrency'] == n]).mean():.1f}" for n in sorted(trace["concurrency"].unique()))
    return f"| {name} | {np.abs(err).mean():.1f} ({err.mean():+.1f}) | {ttft_err.mean():.1f} | {levels} |"


def main() -> None:
    raw = pd.read_csv(TRACE)
    for title, keep in (("all warm rows", raw["warm"]), ("uncontended warm rows (cpu_share ≥ 0.8)",
                                                          raw["warm"] & (raw["cpu_share"] >= 0.8))):
        trace = raw[keep].reset_index(drop=True)
        levels = ", ".join(str(int(n)) for n in sorted(trace["concurrency"].unique()))
        print(f"\n#### {TRACE.name}, {title}: {len(trace)} rows, LOCO\n")
        print(f"| law | latency MAPE % (bias) | TTFT MAPE % | latency MAPE % at n = {levels} |")
        print("|---|---|---|---|")
        for name, make in LAWS.items():
            print(line(name, trace, *loco(trace, make)))
        print(line("per-level slowdowns in n, in-sample (about the best a law in n alone can do)", trace, *per_level(trace)))


if __name__ == "__main__":
    main()
