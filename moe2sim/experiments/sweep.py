"""Budget sweeps: MoE² and the baselines across energy and latency budgets.

Each point sets the budgets (one axis varied, the other at the scenario's values), lets the
method choose its subset S, and reports: U(S) on validation, the test accuracy of the policy
restricted to S (mix-weighted, all test prompts of the scenario's categories), and a
simulation of the scenario under those budgets (latency and energy as measured in the twin).
Methods: moe2 (gate + exact monotone selection), best_single, greedy_energy, random, all_fit
(gate + that baseline's subset), uniform_vote (MoE²'s subset, k experts drawn uniformly, equal
weights: no gate). Points run in parallel over local cores.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from moe2sim.experiments.outputs import OutputDir
from moe2sim.report.summary import summarize
from moe2sim.routing.routers import UniformRouter
from moe2sim.scenario import Scenario
from moe2sim.selection.budgets import Budgets, budgets_of
from moe2sim.selection.solvers import InfeasibleBudgets
from moe2sim.twin import Twin
from moe2sim.twin.factory import subset_utility

METHODS = ("moe2", "best_single", "greedy_energy", "random", "all_fit", "uniform_vote")
# columns of sweep.csv even when no point is feasible (the rest depend on the categories and on `simulate`)
ALWAYS = ("axis", "value", "method", "energy_budget_J", "feasible", "reason", "within_budget", "subset", "size",
          "U_validation", "accuracy_test", "worst_energy_J")


@dataclass(frozen=True)
class SweepPoint:
    axis: str        # "energy" or "latency"
    value: float     # energy budget (J) or latency scale (x the scenario's budgets)
    method: str


def moe2_method(scenario: Scenario) -> str:
    """MoE²'s selection method in a sweep: the scenario's, `exact` unless it names another."""
    return scenario.policy.selection.method if scenario.policy.selection.method != "none" else "exact"


def variant(scenario: Scenario, method: str) -> Scenario:
    """The scenario as `method` selects: MoE² (and the uniform vote over MoE²'s subset) with
    moe2_method, baselines with their own."""
    selection = moe2_method(scenario) if method in ("moe2", "uniform_vote") else method
    policy = scenario.policy.model_copy(update={
        "selection": scenario.policy.selection.model_copy(update={"method": selection})})
    return scenario.model_copy(update={"policy": policy})


def points(scenario: Scenario) -> list[SweepPoint]:
    cfg = scenario.sweep
    return ([SweepPoint("energy", e, m) for e in cfg.energy_budget_J for m in cfg.methods]
            + [SweepPoint("latency", s, m) for s in cfg.latency_scale for m in cfg.methods])


def budgets_at(scenario: Scenario, point: SweepPoint) -> Budgets:
    base = budgets_of(scenario)
    if point.axis == "energy":
        return Budgets(point.value, base.latency_s)
    return Budgets(base.energy_J, base.latency_s * point.value)


def method_twin(scenario: Scenario, method: str) -> Twin:
    """The twin a method's points share; each point only re-solves S for its budgets."""
    twin = Twin.build(variant(scenario, method), solve=False)  # each point solves S for its own budgets
    if method == "uniform_vote":  # MoE²'s subset, but no gate: k experts uniformly, equal weights
        twin = replace(twin, policy=twin.policy.with_router(UniformRouter(len(twin.experts))))
    return twin


def evaluate(scenario: Scenario, twin: Twin, point: SweepPoint, simulate: bool) -> dict[str, Any]:
    budgets = budgets_at(scenario, point)
    row: dict[str, Any] = {"axis": point.axis, "value": point.value, "method": point.method,
                           "energy_budget_J": budgets.energy_J}
    row.update({f"latency_budget_s[{c.name}]": t for c, t in zip(scenario.categories, budgets.latency_s)})
    try:
        twin = twin.with_budgets(budgets)
    except InfeasibleBudgets as exc:
        return {**row, "feasible": False, "reason": str(exc)}
    sel, problem = twin.policy.selection, twin.policy.selector.problem
    test_u, _ = subset_utility(scenario, twin.quality, twin.policy.router, twin.policy.aggregator, twin.workload)
    row.update({"feasible": True, "within_budget": problem.feasible(sel.mask, budgets),
                "subset": "|".join(sel.subset(problem.names)), "size": sel.mask.bit_count(),
                "U_validation": sel.utility, "accuracy_test": test_u(sel.mask),
                "worst_energy_J": problem.energy_of(sel.mask)})
    row.update({f"worst_delay_s[{c}]": d for c, d in zip(problem.categories, problem.delay_of(sel.mask))})
    if simulate:
        _, queries, legs = twin.simulate()
        s = summarize(queries, legs, {e.name: e.idle_power_W for e in twin.experts},
                      {e.name: e.slots for e in twin.experts}, float(queries["finish_s"].max()))
        row.update({"sim_accuracy": s["accuracy"], "sim_energy_J_mean": s["energy_J_per_query"],
                    "sim_energy_J_max": float(queries["energy_J"].max()),
                    "sim_violation_rate": s["budget_violations"]["rate"]})
        for c, block in s["categories"].items():
            row[f"sim_latency_p95_s[{c}]"] = block["latency_s"]["p95"]
    return row


def _evaluate_group(args: tuple[Scenario, str, list[SweepPoint], bool]) -> list[dict[str, Any]]:
    """One task: a method's twin, built once, over some of its points."""
    scenario, method, group, simulate = args
    twin = method_twin(scenario, method)
    return [evaluate(scenario, twin, p, simulate) for p in group]


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them: no traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_sweep(scenario: Scenario, jobs: int | None = None, progress: bool = True,
              sweep_points: Iterable[SweepPoint] | None = None) -> pd.DataFrame:
    """Every point of the sweep; tasks are a method's points in chunks (one twin per task, nothing cached
    between tasks), run in a process pool of `jobs` workers (1: in this process)."""
    todo = list(sweep_points if sweep_points is not None else points(scenario))
    jobs = jobs or os.cpu_count() or 1
    by_method: dict[str, list[SweepPoint]] = {}
    for p in todo:
        by_method.setdefault(p.method, []).append(p)
    chunks = max(1, -(-jobs // max(len(by_method), 1)))
    tasks = [(scenario, m, list(g), scenario.sweep.simulate)
             for m, pts in by_method.items() for g in np.array_split(np.array(pts, dtype=object), chunks) if len(g)]
    bar = tqdm(total=len(todo), desc="sweep", unit="pt", disable=None if progress else True, leave=False)
    rows: list[dict[str, Any]] = []
    if jobs == 1:
        for t in tasks:
            rows += _evaluate_group(t)
            bar.update(len(t[2]))
    else:
        # spawn, not fork: a forked child of a process that already ran torch can deadlock
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_ignore_sigint)
        try:
            for group in pool.map(_evaluate_group, tasks):
                rows += group
                bar.update(len(group))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in list(getattr(pool, "_processes", {}).values()):  # no orphan workers after Ctrl-C
                proc.terminate()
            raise
        pool.shutdown()
    bar.close()
    df = pd.DataFrame(rows)
    df = df.reindex(columns=[*df.columns, *(c for c in ALWAYS if c not in df.columns)])
    order = {m: i for i, m in enumerate(METHODS)}
    return df.sort_values(["axis", "method", "value"], key=lambda c: c.map(order) if c.name == "method" else c,
                          ignore_index=True)


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per axis and method: mean test accuracy over the points where the method's subset keeps the budgets."""
    feasible = df[df["feasible"].fillna(False).astype(bool) & df["within_budget"].fillna(False).astype(bool)]
    out = feasible.groupby(["axis", "method"], sort=False)["accuracy_test"].mean().unstack("method")
    return out.reindex(columns=[m for m in METHODS if m in out.columns])


def sweep_to(scenario: Scenario, out: OutputDir, jobs: int | None = None, progress: bool = True) -> pd.DataFrame:
    """`moe2sim sweep`: run the scenario's sweep and write sweep.csv and report.html into `out`."""
    from moe2sim.report.html import setup_rows, sweep_section, sweep_setup_rows, write_report

    out.check(("sweep.csv", "report.html"))
    if scenario.sweep.simulate:  # before any worker starts: queries must arrive in the simulations
        Twin.build(scenario, solve=False).check_arrivals()
    df = run_sweep(scenario, jobs=jobs, progress=progress)
    with out.staged() as stage:
        df.to_csv(stage / "sweep.csv", index=False)
        write_report(stage / "report.html", f"moe2sim sweep: {scenario.name}", None, None, {}, scenario.description,
                     sweep_section(df, [e.name for e in scenario.experts], [c.name for c in scenario.categories]),
                     [*setup_rows(scenario), *sweep_setup_rows(scenario, moe2_method(scenario))])
    return df
