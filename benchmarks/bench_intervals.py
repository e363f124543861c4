"""Single-run intervals on queues with closed forms: how often sectioning (moe2sim.report.intervals.sectioned)
covers the truth, or says it cannot be trusted.

M/M/1 with service rate 1 (sojourn times exponential with rate 1 − ρ: mean 1/(1 − ρ), p_q = −ln(1 − q)/(1 − ρ)),
simulated by Lindley's recursion; RUNS single runs of N queries per load, the busiest server's utilisation ρ
given as `load`, as `moe2sim run` gives it. Per metric: the mean estimate against the truth, the share of runs
whose interval covers the truth, the share flagged unreliable, and the share that covers or is flagged.

    python benchmarks/bench_intervals.py [--runs 200] [--queries 2000] [--loads 0.5,0.65,0.8] [--seed 123]
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from moe2sim.report.intervals import sectioned


def lindley_mm1(n: int, rho: float, rng: np.random.Generator) -> pd.DataFrame:
    gaps, service = rng.exponential(1 / rho, n), rng.exponential(1.0, n)
    wait = np.zeros(n)
    for i in range(1, n):
        wait[i] = max(0.0, wait[i - 1] + service[i - 1] - gaps[i])
    return pd.DataFrame({"arrival_s": np.cumsum(gaps), "latency_s": wait + service})


def metrics(part: pd.DataFrame) -> dict:
    lat = part["latency_s"].to_numpy()
    return {"latency_s": {"mean": lat.mean(), "p95": np.percentile(lat, 95), "p99": np.percentile(lat, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--loads", default="0.5,0.65,0.8")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| ρ | metric | truth | mean estimate | covers | flagged | covers or flagged |\n|---|---|---|---|---|---|---|")
    for rho in (float(x) for x in args.loads.split(",")):
        truth = {"mean": 1 / (1 - rho), "p95": -math.log(0.05) / (1 - rho), "p99": -math.log(0.01) / (1 - rho)}
        runs = [sectioned(lindley_mm1(args.queries, rho, rng), metrics, load=rho) for _ in range(args.runs)]
        for name, value in truth.items():
            e = [r[f"latency_s.{name}"] for r in runs]
            covers = np.array([x["low"] <= value <= x["high"] for x in e])
            flagged = np.array([not x["reliable"] for x in e])
            print(f"| {rho:g} | {name} | {value:.2f} | {np.mean([x['mean'] for x in e]):.2f} | {covers.mean():.3f} "
                  f"| {flagged.mean():.3f} | {(covers | flagged).mean():.3f} |")


if __name__ == "__main__":
    main()
