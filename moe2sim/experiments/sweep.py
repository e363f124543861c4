"""Budget sweeps: MoE² and the baselines across energy and latency budgets, replicated over seeds.

Each point sets the budgets (one axis varied, the other at the scenario's values), lets the
method choose its subset S, and reports: U(S) on validation, the test accuracy of the policy
restricted to S (mix-weighted, all test prompts of the scenario's categories), and a
simulation of the scenario under those budgets (latency and energy as measured in the twin).
Methods: moe2 (gate + exact monotone selection), best_single, greedy_energy, random, all_fit
(gate + that baseline's subset), uniform_vote (MoE²'s subset, k experts drawn uniformly, equal
weights: no gate).

Replications: a unit of work is (point, seed); replication i runs with the seed of
experiments/replications.py (scenario seed + i), the same seed for every method and budget, so the
methods see the same arrivals and prompts (common random numbers); report/sweep_table.py turns the rows
into the sweep table and the paired differences. Units run on an executor (experiments/executors.py:
local process pool or Ray), grouped by method so a worker builds a method's twin once, and are
journaled as they finish (data/journal.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from moe2sim.data.journal import Journal, fingerprint, roundtrip
from moe2sim.experiments.executors import Task, WorkSpec, executor
from moe2sim.experiments.replications import replication_seeds
from moe2sim.report.outputs import OutputDir
from moe2sim.report.publish import SWEEP_FILES, publish, sweep_results
from moe2sim.report.summary import run_summary
from moe2sim.report.sweep_table import paired, table
from moe2sim.routing.routers import UniformRouter
from moe2sim.scenario import Scenario
from moe2sim.selection.budgets import Budgets, budgets_of
from moe2sim.selection.solvers import InfeasibleBudgets
from moe2sim.twin import Twin
from moe2sim.twin.factory import moe2_selection, selecting, subset_utility

JOURNAL = "sweep.partial.jsonl"
TITLE = "moe2sim sweep"
ROW = "row"  # the journal's record kind


@dataclass(frozen=True)
class SweepPoint:
    axis: str        # "energy" or "latency"
    value: float     # energy budget (J) or latency scale (x the scenario's budgets)
    method: str


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
    twin = Twin.build(selecting(scenario, method), solve=False)  # each point solves S for its own budgets
    if method == "uniform_vote":  # MoE²'s subset, but no gate: k experts uniformly, equal weights
        twin = replace(twin, policy=twin.policy.with_router(UniformRouter(len(twin.experts))))
    return twin


def evaluate(scenario: Scenario, twin: Twin, point: SweepPoint, simulate: bool, seed: int | None = None
             ) -> dict[str, Any]:
    """One point: the method's subset under the point's budgets, its test accuracy, and (if `simulate`) the
    simulated run with `seed` (default: the scenario's)."""
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
                "U_validation": sel.utility, "U_se": problem.utility.se(sel.mask), "accuracy_test": test_u(sel.mask),
                "worst_energy_J": problem.energy_of(sel.mask)})
    row.update({f"worst_delay_s[{c}]": d for c, d in zip(problem.categories, problem.delay_of(sel.mask))})
    if simulate:
        _, queries, legs = twin.simulate(seed)
        s = run_summary(twin, queries, legs, 0.0)
        row.update({"sim_accuracy": s["accuracy"], "sim_energy_J_mean": s["energy_J_per_query"],
                    "sim_energy_J_max": float(queries["energy_J"].max()),
                    "sim_violation_rate": s["budget_violations"]["rate"]})
        for c, block in s["categories"].items():
            row[f"sim_latency_p95_s[{c}]"] = block["latency_s"]["p95"]
    return row


@dataclass(frozen=True)
class Unit:
    """One unit of work: a point simulated with one replication's seed."""

    point: SweepPoint
    replication: int
    seed: int

    @property
    def key(self) -> tuple[str, float, str, int]:
        return (self.point.axis, float(self.point.value), self.point.method, self.seed)


def row_key(row: dict[str, Any]) -> tuple[str, float, str, int]:
    """A result row's Unit.key."""
    return (row["axis"], float(row["value"]), row["method"], int(row["seed"]))


def units(scenario: Scenario, replications: int = 1, sweep_points: Iterable[SweepPoint] | None = None) -> list[Unit]:
    seeds = replication_seeds(scenario.seed, replications)
    return [Unit(p, i, s) for p in (sweep_points if sweep_points is not None else points(scenario))
            for i, s in enumerate(seeds)]


def _work(scenario: Scenario, twin: Twin, todo: list[Unit]) -> list[dict[str, Any]]:
    """A task: some units of one method, on that method's twin."""
    return [{**evaluate(scenario, twin, u.point, scenario.sweep.simulate, u.seed), "replication": u.replication,
             "seed": u.seed} for u in todo]


def tasks_of(todo: list[Unit], workers: int, per_worker: int, max_chunk: int = 64) -> list[Task]:
    """The units grouped by method, each method's cut into ⌈per_worker · workers / methods⌉ chunks, more if a
    chunk would exceed `max_chunk` units (a chunk is what is lost to an interruption, and journaled at once)."""
    by_method: dict[str, list[Unit]] = {}
    for u in todo:
        by_method.setdefault(u.point.method, []).append(u)
    chunks = max(1, -(-per_worker * workers // max(len(by_method), 1)))
    return [(m, [us[i] for i in idx]) for m, us in by_method.items()
            for idx in np.array_split(np.arange(len(us)), min(max(chunks, -(-len(us) // max_chunk)), len(us)))]


def journal_fingerprint(scenario: Scenario) -> str:
    """What changes a row's content: the scenario, its sweep's budget lists and methods left out."""
    return fingerprint(scenario.model_dump_json(exclude={"sweep": {"energy_budget_J", "latency_scale", "methods"}}))


def sweep_rows(scenario: Scenario, replications: int = 1, jobs: int | None = None, progress: bool = True,
               sweep_points: Iterable[SweepPoint] | None = None, executor_name: str = "local",
               address: str | None = None, journal: Journal | None = None) -> pd.DataFrame:
    """One row per (point, replication), in sweep order. Units whose rows `journal` holds (see `sweep_to`)
    are not run again; the others run on the executor and are appended to it as their task finishes."""
    todo = units(scenario, replications, sweep_points)
    done = {row_key(r): r for r in (journal.records(ROW) if journal is not None else ())}
    wanted = {u.key for u in todo}
    rows = [r for k, r in done.items() if k in wanted]
    missing = [u for u in todo if u.key not in done]
    bar = tqdm(total=len(todo), initial=len(rows), desc="sweep", unit="run", disable=None if progress else True,
               leave=False)
    if missing:
        with executor(executor_name, jobs, address) as engine:
            spec = WorkSpec(scenario, method_twin, _work)
            for group in engine.run(spec, tasks_of(missing, engine.workers, engine.tasks_per_worker)):
                group = [roundtrip(r) for r in group]
                if journal is not None:
                    journal.append(ROW, group)
                rows += group
                bar.update(len(group))
    bar.close()
    order = {u.key: i for i, u in enumerate(todo)}
    return pd.DataFrame(sorted(rows, key=lambda r: order[row_key(r)]))


def run_sweep(scenario: Scenario, jobs: int | None = None, progress: bool = True,
              sweep_points: Iterable[SweepPoint] | None = None, replications: int = 1, executor_name: str = "local",
              address: str | None = None) -> pd.DataFrame:
    """The sweep table (report/sweep_table.py) of every point of the sweep (or `sweep_points`)."""
    return table(sweep_rows(scenario, replications, jobs, progress, sweep_points, executor_name, address))


def sweep_to(scenario: Scenario, out: OutputDir, jobs: int | None = None, progress: bool = True,
             replications: int = 1, executor_name: str = "local", address: str | None = None
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`moe2sim sweep`: run the scenario's sweep, journaling rows in `out`/sweep.partial.jsonl (a restart on
    the same folder resumes), and publish sweep.csv, paired.csv (R ≥ 2) and report.html. Returns the table and
    the paired differences."""
    out.check((*SWEEP_FILES, JOURNAL))
    if scenario.sweep.simulate:  # before any worker starts: queries must arrive in the simulations
        Twin.build(scenario, solve=False).check_arrivals()
    out.adopt([JOURNAL])
    with Journal(out.path / JOURNAL, TITLE, journal_fingerprint(scenario)) as journal:
        rows = sweep_rows(scenario, replications, jobs, progress, None, executor_name, address, journal)
    df, diffs = table(rows), paired(rows)
    publish(out, sweep_results(scenario, df, diffs, replications, moe2_selection(scenario)), keep=[JOURNAL])
    return df, diffs
