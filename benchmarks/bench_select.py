"""Speed of the coarse-level selection: best-first branch and bound (solve_monotone) vs exhaustive search.

1. Synthetic monotone instances with the real constraint shapes, for N = 7 … 40 experts:
   E[n] ~ U(20, 500) J; D[n, m] = link/aggregation base + per-expert speed × per-category length
   factor (M = 4 categories), k ~ {2, 3, 4}; budgets that bind (a latency cut-off at the q-quantile
   of each category's delays, q ~ U(0.5, 0.95), and an energy budget of 30–80 % of the k largest
   energies of the experts that fit). Two monotone utilities: `coverage`, the weighted fraction
   of 300 validation items that some member of S gets right (like the oracle accuracy of a
   mixture; it saturates), and `additive`, a sum of positive per-expert weights (no saturation,
   so the bound U(S ∪ candidates) is loose: the harder case for the branch and bound).
   Per N: solver time and sets evaluated (U cache emptied before every solve) of monotone and,
   up to --exhaustive-max-n, of exhaustive search, and their agreement (must be 100 %).
   Stress rows: N = 40 with every expert within the latency budgets (only energy binds), where
   the search space is largest.
2. The real 7-expert problem of scenarios/paper.yaml at the scenario's budgets: monotone vs
   exhaustive (and exact, where the library has it).

    python benchmarks/bench_select.py [--instances 20] [--exhaustive-max-n 20] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from moe2sim.selection import solvers as selection
from moe2sim.routing.aggregation import Outcomes
from moe2sim.selection.problem import oracle_coverage
from moe2sim.selection.budgets import Budgets
from moe2sim.selection.problem import SelectionProblem
from moe2sim.selection.solvers import InfeasibleBudgets, solve_exhaustive, solve_monotone

ROOT = Path(__file__).resolve().parents[1]
NS = (7, 10, 14, 20, 30, 40)


def coverage_utility(rng: np.random.Generator, n: int, items: int = 300):
    skill = rng.uniform(0.2, 0.75, n)
    correct = rng.random((items, n)) < skill[None, :]
    weight = rng.uniform(0.1, 1.0, items)
    return oracle_coverage(Outcomes(correct.astype(float)), np.arange(items), weight / weight.sum())


def additive_utility(rng: np.random.Generator, n: int):
    weight = rng.uniform(0.0, 1.0, n).tolist()
    return lambda mask: sum(weight[j] for j in selection.members(mask))


UTILITIES = {"coverage": coverage_utility, "additive": additive_utility}


def instance(rng: np.random.Generator, n: int, utility: str = "coverage") -> tuple[SelectionProblem, Budgets]:
    """A synthetic instance whose budgets bind (redrawn until at least one expert fits)."""
    m, k = 4, int(rng.integers(2, 5))
    energy = rng.uniform(20.0, 500.0, n)
    speed = rng.uniform(0.2, 3.0, n)
    base = rng.uniform(0.0, 0.05, n)
    length = rng.uniform(0.5, 4.0, m)
    delay = base[:, None] + speed[:, None] * length[None, :]
    problem = SelectionProblem([f"e{j}" for j in range(n)], [f"c{c}" for c in range(m)], delay, energy, k,
                               UTILITIES[utility](rng, n))
    while True:
        q = rng.uniform(0.5, 0.95)
        latency = np.array([np.quantile(delay[:, c], q) for c in range(m)]) * rng.uniform(0.97, 1.03, m)
        fit = np.all(delay <= latency[None, :], axis=1)
        if not fit.any():
            continue
        top_k = np.sort(energy[fit])[::-1][:k].sum()
        budget = max(top_k * rng.uniform(0.3, 0.8), energy[fit].min())
        return problem, Budgets(float(budget), latency)


def timed(solver, problem: SelectionProblem, budgets: Budgets):
    """One solve from cold caches (U's, and the per-prompt correctness of a UtilityEstimate)."""
    problem.cache.clear()
    getattr(problem.utility, "cache", {}).clear()
    return solver(problem, budgets)


def synthetic(utility: str, instances: int, exhaustive_max_n: int, exhaustive_instances_20: int,
              seed: int) -> list[dict]:
    rows = []
    for n in NS:
        rng = np.random.default_rng([seed, list(UTILITIES).index(utility), n])
        mono_ms, mono_sets, exh_ms, exh_sets, fit, agree = [], [], [], [], [], 0
        for i in range(instances):
            problem, budgets = instance(rng, n, utility)
            fit.append(int(selection.check_feasible(problem, budgets).sum()))
            got = timed(solve_monotone, problem, budgets)
            mono_ms.append(got.seconds * 1e3)
            mono_sets.append(got.evaluated)
            run_exhaustive = n <= exhaustive_max_n and (n < 20 or i < exhaustive_instances_20)
            if run_exhaustive:
                exact = timed(solve_exhaustive, problem, budgets)
                exh_ms.append(exact.seconds * 1e3)
                exh_sets.append(exact.evaluated)
                agree += abs(exact.utility - got.utility) <= 1e-12
        row = {"N": n, "instances": instances, "fit_alone_mean": float(np.mean(fit)),
               "monotone_ms_mean": float(np.mean(mono_ms)), "monotone_ms_max": float(np.max(mono_ms)),
               "monotone_sets_mean": float(np.mean(mono_sets)), "monotone_sets_max": int(np.max(mono_sets))}
        if exh_ms:
            row.update({"exhaustive_instances": len(exh_ms),
                        "exhaustive_ms_mean": float(np.mean(exh_ms)), "exhaustive_ms_max": float(np.max(exh_ms)),
                        "exhaustive_sets_mean": float(np.mean(exh_sets)), "exhaustive_sets_max": int(np.max(exh_sets)),
                        "agreement": agree / len(exh_ms)})
        rows.append(row)
        print(f"{utility} N={n}: done", file=sys.stderr, flush=True)
    return rows


def stress(utility: str, instances: int, seed: int, n: int = 40) -> dict:
    """Every expert meets the latency budgets; only energy (30–80 % of the k largest) binds."""
    rng = np.random.default_rng([seed, 99, list(UTILITIES).index(utility)])
    ms, sets = [], []
    for _ in range(instances):
        problem, _ = instance(rng, n, utility)
        top_k = np.sort(problem.energy_J)[::-1][: problem.k].sum()
        budgets = Budgets(float(top_k * rng.uniform(0.3, 0.8)), problem.delay_s.max(axis=0) * 1.01)
        got = timed(solve_monotone, problem, budgets)
        ms.append(got.seconds * 1e3)
        sets.append(got.evaluated)
    return {"utility": utility, "N": n, "instances": instances, "ms_mean": float(np.mean(ms)),
            "ms_max": float(np.max(ms)), "sets_mean": float(np.mean(sets)), "sets_max": int(np.max(sets))}


def markdown(rows: list[dict]) -> str:
    out = ["| N | instances | experts that fit (mean) | monotone ms mean / max | monotone sets mean / max "
           "| exhaustive instances | exhaustive ms mean / max | exhaustive sets mean / max | agreement |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        exh = (f"| {r['exhaustive_instances']} | {r['exhaustive_ms_mean']:.1f} / {r['exhaustive_ms_max']:.1f} "
               f"| {r['exhaustive_sets_mean']:.0f} / {r['exhaustive_sets_max']} | {100 * r['agreement']:.0f} % |"
               if "agreement" in r else "| – | – | – | – |")
        out.append(f"| {r['N']} | {r['instances']} | {r['fit_alone_mean']:.1f} "
                   f"| {r['monotone_ms_mean']:.2f} / {r['monotone_ms_max']:.2f} "
                   f"| {r['monotone_sets_mean']:.1f} / {r['monotone_sets_max']} {exh}")
    return "\n".join(out)


def paper(repeats: int) -> list[dict]:
    from moe2sim.selection.budgets import budgets_of
    from moe2sim.scenario import load_scenario
    from moe2sim.twin import Twin
    from moe2sim.twin.factory import selecting

    scenario = selecting(load_scenario(ROOT / "scenarios" / "paper.yaml"))
    problem = Twin.build(scenario, solve=False).policy.selector.problem
    budgets = budgets_of(scenario)
    solvers = {"monotone": solve_monotone, "exhaustive": solve_exhaustive}
    if hasattr(selection, "solve_exact") and getattr(problem, "upper_bound", None) is not None:
        solvers["exact"] = selection.solve_exact
    for rule in getattr(selection, "PREFERENCES", {}):  # the uncertainty-aware rules and their references
        for exhaustive in (False, True):
            solvers[rule + ("_exhaustive" if exhaustive else "")] = \
                lambda p, b, rule=rule, exhaustive=exhaustive: selection.solve_uncertain(p, b, rule, exhaustive)
    rows = []
    for name, solver in solvers.items():
        runs = [timed(solver, problem, budgets) for _ in range(repeats)]
        best = min(runs, key=lambda s: s.seconds)
        rows.append({"method": name, "subset": best.subset(problem.names), "U": best.utility,
                     "sets_evaluated": best.evaluated, "ms_best": best.seconds * 1e3,
                     "ms_median": float(np.median([s.seconds for s in runs])) * 1e3})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--exhaustive-max-n", type=int, default=20)
    parser.add_argument("--utilities", default="coverage,additive")
    parser.add_argument("--exhaustive-instances-20", type=int, default=20,
                        help="exhaustive search at N = 20 on only this many of the instances (it is slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paper-repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results = {}
    for utility in args.utilities.split(","):
        start = time.perf_counter()
        rows = results[utility] = synthetic(utility, args.instances, args.exhaustive_max_n,
                                            args.exhaustive_instances_20, args.seed)
        print(f"\n## Synthetic monotone instances, U = {utility} (real constraint shapes, budgets that bind; "
              f"{time.perf_counter() - start:.0f} s)\n")
        print(markdown(rows))
        at40 = next((r for r in rows if r["N"] == 40), None)
        if at40:
            print(f"\nN = 40: max solver time {at40['monotone_ms_max']:.1f} ms (target: exact answers under 1 s)")
        bad = [r["N"] for r in rows if r.get("agreement", 1.0) < 1.0]
        print(f"\nDISAGREEMENT with exhaustive search at N = {bad}" if bad else
              "\nAgreement with exhaustive search: 100 % wherever it ran")

    stressed = [stress(u, args.instances, args.seed) for u in args.utilities.split(",")]
    print("\n## Stress: N = 40, every expert within the latency budgets, only energy binds\n")
    print("| U | N | instances | monotone ms mean / max | monotone sets mean / max |\n|---|---|---|---|---|")
    for r in stressed:
        print(f"| {r['utility']} | {r['N']} | {r['instances']} | {r['ms_mean']:.1f} / {r['ms_max']:.1f} "
              f"| {r['sets_mean']:.0f} / {r['sets_max']} |")

    real = paper(args.paper_repeats)
    print("\n## Real problem: scenarios/paper.yaml at its budgets (900 J; 3/6/3/6 s)\n")
    print("| method | subset | U | sets evaluated | ms (best / median of "
          f"{args.paper_repeats}) |\n|---|---|---|---|---|")
    for r in real:
        print(f"| {r['method']} | {', '.join(r['subset'])} | {r['U']:.4f} | {r['sets_evaluated']} "
              f"| {r['ms_best']:.2f} / {r['ms_median']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"synthetic": results, "stress": stressed, "paper": real}, indent=2))


if __name__ == "__main__":
    main()
