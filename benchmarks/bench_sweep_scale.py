"""A sweep of ≥ 500 runs on this machine: serial, the local process pool, and a local Ray instance; plus a
simulation of the schedule on a multi-node Ray cluster.

Sweep: scenarios {quickstart, paper} (each with queries=QUERIES, simulate on) × energy budgets
{200, 300, 450, 600, 900, 1200} J and latency scales {0.5, 1.0} × the 6 methods × SEEDS replications
(seeds scenario seed + 0..R-1): 2 × 8 × 6 × 6 = 576 runs by default.

1. serial: every run in this process, timed one by one (a method's twin built once per scenario): the
   work itself, per-run times and per-method build times.
2. local: `sweep_rows(..., executor_name="local", jobs=J)` (spawn process pool; a twin per task).
3. ray: a local Ray instance (ray.init(num_cpus=J)), `sweep_rows(..., executor_name="ray")` (ActorPool
   of J actors; the scenario ray.put once; a twin per actor and method); then again with 1 actor, the
   check of the schedule model below.
The three tables must be equal. Overhead per run = (wall × J − serial work) / runs: whatever the
backend adds to the work (process start, imports, twin builds beyond the serial one, shipping,
scheduling, idle cores at the end).

4. Schedule simulation: the tasks `tasks_of` cuts for N nodes × C cores, each an actor; list scheduling
   as Ray's ActorPool does it (the next task goes to the first idle actor); a task's time = its runs'
   measured times + a twin build when the actor has not built that method yet + a per-task dispatch
   cost; every actor pays a start (process, imports, fetch of the context from its node's object store). The actor start is fitted to the J-actor Ray wall; the model then predicts the 1-actor wall
   (checked against the measurement) and clusters of N × 16 cores, as built and as planned (actors
   kept across sweeps and each serving one method).

    python benchmarks/bench_sweep_scale.py [--seeds 6] [--queries 200] [--jobs 2] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import time
from collections import defaultdict

import pandas as pd

from moe2sim.experiments.sweep import _work, method_twin, sweep_rows, tasks_of, units
from moe2sim.report.sweep_table import table
from moe2sim.scenario import Scenario, load_scenario

DISPATCH_S = 0.002  # Ray's own cost per actor call (order of ms; negligible beside a run)
ENERGY = [200, 300, 450, 600, 900, 1200]
LATENCY = [0.5, 1.0]


def scenarios(queries: int) -> list[Scenario]:
    sweep = f"sweep={{energy_budget_J: {ENERGY}, latency_scale: {LATENCY}, simulate: true}}"
    return [load_scenario("quickstart", [f"queries={queries}", sweep]),
            load_scenario("paper", ["duration_s=null", f"queries={queries}", sweep])]


def serial(scenario: Scenario, seeds: int) -> tuple[pd.DataFrame, dict[str, float], dict[tuple, float]]:
    """Every run in this process: rows, build seconds per method, seconds per run (keyed by Unit.key)."""
    builds, per_run, rows = {}, {}, []
    todo = units(scenario, seeds)
    for method in scenario.sweep.methods:
        t0 = time.perf_counter()
        twin = method_twin(scenario, method)
        builds[method] = time.perf_counter() - t0
        for u in (u for u in todo if u.point.method == method):
            t0 = time.perf_counter()
            rows += _work(scenario, twin, [u])
            per_run[u.key] = time.perf_counter() - t0
    return table(pd.DataFrame(rows)), builds, per_run


def simulate_schedule(todo_by_scenario: list[tuple[list, dict[str, float], dict[tuple, float]]], nodes: int,
                      cores: int, start_s: float, dispatch_s: float = DISPATCH_S, per_worker: int = 4,
                      affine: bool = False, run_scale: float = 1.0, persistent: bool = False) -> float:
    """Makespan of the sweeps (one after another, as the benchmark runs them) on nodes × cores actors.
    affine: the planned variant where each actor serves one method only (actors split over methods in
    proportion to their work), so it builds one twin. start_s: an actor's start (process, imports, context
    fetch), paid by every actor of every sweep (persistent: once, actors kept across sweeps and their twins
    with them); run_scale multiplies the measured run times."""
    clock = 0.0
    built: dict[int, set[tuple[int, str]]] = defaultdict(set)
    for index, (todo, builds, per_run) in enumerate(todo_by_scenario):
        if not persistent:
            built.clear()
        start_s = start_s if index == 0 or not persistent else 0.0
        workers = nodes * cores
        tasks = tasks_of(todo, workers, per_worker)
        free = [(clock + start_s, a) for a in range(workers)]
        heapq.heapify(free)
        pools: dict[str, list] = {}
        if affine:
            methods = list(dict.fromkeys(m for m, _ in tasks))
            share = {m: sum(len(c) for mm, c in tasks if mm == m) for m in methods}
            total = sum(share.values())
            counts = {m: max(1, round(workers * share[m] / total)) for m in methods}
            ids = iter(range(workers * 2))
            pools = {m: [(clock + start_s, next(ids)) for _ in range(counts[m])] for m in methods}
        end = clock
        for method, chunk in tasks:
            queue = pools[method] if affine else free
            start, actor = heapq.heappop(queue)
            t = dispatch_s + run_scale * sum(per_run[u.key] for u in chunk)
            if (index, method) not in built[actor]:
                built[actor].add((index, method))
                t += builds[method]
            heapq.heappush(queue, (start + t, actor))
            end = max(end, start + t)
        clock = end
    return clock


def scaled_times(scenario: Scenario, per_run: dict[tuple, float], seeds: int) -> dict[tuple, float]:
    """Per-run times for any number of seeds: seed scenario.seed + i takes the measured time of seed i mod `seeds`."""
    return {u.key: per_run[(*u.key[:3], scenario.seed + u.replication % seeds)] for u in units(scenario, seeds * 10)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json")
    args = ap.parse_args()
    import ray

    result: dict = {"jobs": args.jobs, "seeds": args.seeds, "queries": args.queries, "cpus": os.cpu_count()}
    scs = scenarios(args.queries)
    runs = sum(len(units(s, args.seeds)) for s in scs)
    result["runs"] = runs
    print(f"{runs} runs ({len(scs)} scenarios x {len(ENERGY) + len(LATENCY)} budgets x 6 methods x {args.seeds} seeds), "
          f"{args.jobs} workers")

    t0 = time.perf_counter()
    measured = [serial(s, args.seeds) for s in scs]
    result["serial_wall_s"] = time.perf_counter() - t0
    work = sum(sum(m[2].values()) + sum(m[1].values()) for m in measured)
    result["serial_work_s"] = work
    result["build_s_mean"] = sum(sum(m[1].values()) for m in measured) / sum(len(m[1]) for m in measured)
    result["run_s_mean"] = sum(sum(m[2].values()) for m in measured) / runs
    print(f"serial: {result['serial_wall_s']:.1f} s ({result['run_s_mean'] * 1e3:.0f} ms per run, "
          f"{result['build_s_mean']:.2f} s per twin build)")

    t0 = time.perf_counter()
    local = [table(sweep_rows(s, args.seeds, args.jobs, False, executor_name="local")) for s in scs]
    result["local_wall_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ray.init(num_cpus=args.jobs, include_dashboard=False, log_to_driver=False)
    result["ray_init_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    remote = [table(sweep_rows(s, args.seeds, args.jobs, False, executor_name="ray")) for s in scs]
    result["ray_wall_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in scs:
        sweep_rows(s, args.seeds, 1, False, executor_name="ray")
    result["ray_1_actor_wall_s"] = time.perf_counter() - t0
    ray.shutdown()

    for a, b, c in zip([m[0] for m in measured], local, remote):
        pd.testing.assert_frame_equal(a, b)
        pd.testing.assert_frame_equal(a, c)
    result["tables_equal"] = True
    for name in ("local", "ray"):
        wall = result[f"{name}_wall_s"]
        result[f"{name}_overhead_ms_per_run"] = (wall * args.jobs - work) / runs * 1e3
        result[f"{name}_speedup_vs_serial"] = result["serial_wall_s"] / wall
        print(f"{name}: {wall:.1f} s, speed-up {result[f'{name}_speedup_vs_serial']:.2f} x over serial, overhead "
              f"{result[f'{name}_overhead_ms_per_run']:.0f} ms per run")
    print(f"ray init {result['ray_init_s']:.1f} s (not in the wall above)")

    # Schedule model: fit the actor start cost so the model reproduces the measured local Ray wall.
    todo = [(units(s, args.seeds), m[1], m[2]) for s, m in zip(scs, measured)]
    lo, hi = 0.0, 60.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if simulate_schedule(todo, 1, args.jobs, mid) < result["ray_wall_s"] else (lo, mid)
    start = (lo + hi) / 2
    result["fitted_actor_start_s"] = start
    result["model_ray_wall_s_no_start"] = simulate_schedule(todo, 1, args.jobs, 0.0)
    print(f"schedule model: {result['model_ray_wall_s_no_start']:.1f} s with free actor starts; a fitted start of "
          f"{start:.1f} s per actor reproduces the measured {result['ray_wall_s']:.1f} s")
    predicted = simulate_schedule(todo, 1, 1, start)
    result["model_ray_1_actor_wall_s"] = predicted
    print(f"check: with 1 actor the model predicts {predicted:.1f} s, measured {result['ray_1_actor_wall_s']:.1f} s")
    big = [(units(s, args.seeds * 10), m[1], scaled_times(s, m[2], args.seeds)) for s, m in zip(scs, measured)]
    big_runs = sum(len(b[0]) for b in big)
    result["cluster_runs"] = big_runs
    cluster = {}
    for run_scale in (1.0, 10.0):
        for plan in ("as built", "planned"):
            base = None
            for nodes, cores in ((1, 16), (2, 16), (4, 16), (8, 16), (16, 16)):
                t = simulate_schedule(big, nodes, cores, start, affine=plan == "planned", run_scale=run_scale,
                                      persistent=plan == "planned")
                base = base or t
                name = f"{nodes}x{cores} runs x{run_scale:g} {plan}"
                cluster[name] = {"makespan_s": t, "speedup_vs_1_node": base / t}
                print(f"cluster {name}, {big_runs} runs: {t:.1f} s (x{base / t:.2f} vs 1 node)")
    result["cluster_model"] = cluster
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
