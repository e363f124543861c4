"""Simulator speed: moe2sim vs a bare SimPy model of the same arrivals and service times.

Runs scenarios/paper.yaml (7 experts, k=2) for a simulated day at 1 query/s, then replays
exactly its arrivals, routes, link delays and service times through a textbook SimPy model
(one process per query, one per leg, simpy.Resource per expert, AllOf fan-in) and checks the
two agree on every leg's start time. Then peak memory for 6, 24 and 72 simulated hours, each
in a fresh process. Prints a markdown table; results go to benchmarks/RESULTS.md.

    python benchmarks/bench_sim.py [--hours 24] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import simpy

from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin

PAPER = Path(__file__).resolve().parents[1] / "scenarios" / "paper.yaml"


def paper_twin(hours: float) -> Twin:
    return Twin.build(load_scenario(PAPER, [f"duration_s={hours * 3600}", "arrivals.rate_per_s=1.0"]))


def bare_simpy(arrival: np.ndarray, experts: np.ndarray, uplink: np.ndarray, service: np.ndarray,
               slots: list[int]) -> np.ndarray:
    """The same fan-out with SimPy's usual idioms; returns each leg's service start time."""
    env = simpy.Environment()
    servers = [simpy.Resource(env, capacity=c) for c in slots]
    start = np.full(experts.shape, np.nan)

    def leg(i: int, j: int):
        yield env.timeout(uplink[i, j])
        with servers[experts[i, j]].request() as req:
            yield req
            start[i, j] = env.now
            yield env.timeout(service[i, j])

    def query(i: int):
        yield simpy.AllOf(env, [env.process(leg(i, j)) for j in range(experts.shape[1])])

    def source():
        for i, t in enumerate(arrival.tolist()):
            yield env.timeout(t - env.now)
            env.process(query(i))

    env.process(source())
    env.run()
    return start


def memory_probe(hours: float) -> dict[str, float]:
    """Run in a fresh process: peak RSS after a simulation of `hours`."""
    twin = paper_twin(hours)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, queries, legs = twin.simulate()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    records = queries.memory_usage(deep=True).sum() + legs.memory_usage(deep=True).sum()
    return {"hours": hours, "queries": len(queries), "rss_before_MiB": base / 1024,
            "rss_peak_MiB": peak / 1024, "records_MiB": records / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-probe", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe)))
        return

    twin = paper_twin(args.hours)
    ours, bare = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result, queries, legs = twin.simulate()
        ours.append(time.perf_counter() - t0)
        k = queries["k"].iloc[0]
        names = [e.name for e in twin.experts]
        experts = legs["expert"].cat.codes.to_numpy().reshape(-1, k)
        assert list(legs["expert"].cat.categories) == names
        uplink = legs["uplink_s"].to_numpy().reshape(-1, k)
        service = (legs["ttft_s"] + legs["decode_s"]).to_numpy().reshape(-1, k)
        t0 = time.perf_counter()
        start = bare_simpy(queries["arrival_s"].to_numpy(), experts, uplink, service, [e.slots for e in twin.experts])
        bare.append(time.perf_counter() - t0)
        ours_start = legs["start_s"].to_numpy().reshape(-1, k)
        agree = float(np.max(np.abs(start - ours_start)))
    n = len(queries)
    best_ours, best_bare = min(ours), min(bare)
    print(f"| model | queries | wall s (best of {args.repeats}) | queries / wall s |")
    print("|---|---|---|---|")
    print(f"| moe2sim (policy, service draws, records included) | {n} | {best_ours:.2f} | {n / best_ours:,.0f} |")
    print(f"| bare SimPy, same arrivals and service times | {n} | {best_bare:.2f} | {n / best_bare:,.0f} |")
    print(f"\nratio moe2sim / bare throughput: {best_bare / best_ours:.2f}; "
          f"largest leg start-time difference between the two: {agree:.3g} s")
    print("\n| simulated hours | queries | peak RSS MiB | RSS before run MiB | records in memory MiB |")
    print("|---|---|---|---|---|")
    for hours in (6, 24, 72):
        out = subprocess.run([sys.executable, __file__, "--memory-probe", str(hours)],
                             capture_output=True, text=True, check=True).stdout
        m = json.loads(out)
        print(f"| {hours} | {m['queries']} | {m['rss_peak_MiB']:.0f} | {m['rss_before_MiB']:.0f} | {m['records_MiB']:.1f} |")


if __name__ == "__main__":
    main()
