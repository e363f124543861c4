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
methods see the same arrivals and prompts (common random numbers). `table` gives per (point, method)
each simulated metric's mean and, with R ≥ 2, its 95 % Student-t interval across replications;
`paired` the interval of MoE² − baseline from the per-seed differences. Units run on a backend
(experiments/backends.py: local process pool or Ray), grouped by method so a worker builds a method's
twin once, and are journaled as they finish (experiments/journal.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, get_args

import numpy as np
import pandas as pd
from tqdm import tqdm

from moe2sim.experiments.backends import Job, Task, backend
from moe2sim.experiments.journal import NAME as JOURNAL, Journal, fingerprint, normalise
from moe2sim.experiments.outputs import OutputDir
from moe2sim.experiments.replications import replication_seeds, run_summary
from moe2sim.report.intervals import t_interval
from moe2sim.routing.routers import UniformRouter
from moe2sim.scenario import Scenario, SweepMethod
from moe2sim.selection.budgets import Budgets, budgets_of
from moe2sim.selection.solvers import InfeasibleBudgets
from moe2sim.twin import Twin
from moe2sim.twin.factory import moe2_selection, selecting, subset_utility

METHODS = get_args(SweepMethod)
# columns of sweep.csv even when no point is feasible (the rest depend on the categories and on `simulate`)
ALWAYS = ("axis", "value", "method", "energy_budget_J", "feasible", "reason", "within_budget", "subset", "size",
          "U_validation", "accuracy_test", "worst_energy_J")
KEY = ["axis", "value", "method"]


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
               sweep_points: Iterable[SweepPoint] | None = None, backend_name: str = "local",
               address: str | None = None, journal: Path | None = None) -> pd.DataFrame:
    """One row per (point, replication), in sweep order. Units already in `journal` (same fingerprint) are
    not run again; the others run on the backend and are appended to it as their task finishes."""
    todo = units(scenario, replications, sweep_points)
    log = Journal(journal, journal_fingerprint(scenario), row_key) if journal is not None else None
    done = {k: r for k, r in (log.rows.items() if log else ())}
    wanted = {u.key for u in todo}
    rows = [r for k, r in done.items() if k in wanted]
    missing = [u for u in todo if u.key not in done]
    bar = tqdm(total=len(todo), initial=len(rows), desc="sweep", unit="run", disable=None if progress else True,
               leave=False)
    if missing:
        with backend(backend_name, jobs, address) as engine:
            job = Job(scenario, method_twin, _work)
            for group in engine.run(job, tasks_of(missing, engine.workers, engine.tasks_per_worker)):
                group = [normalise(r) for r in group]
                if log is not None:
                    log.append(group)
                rows += group
                bar.update(len(group))
    bar.close()
    order = {u.key: i for i, u in enumerate(todo)}
    return pd.DataFrame(sorted(rows, key=lambda r: order[row_key(r)]))


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


def run_sweep(scenario: Scenario, jobs: int | None = None, progress: bool = True,
              sweep_points: Iterable[SweepPoint] | None = None, replications: int = 1, backend_name: str = "local",
              address: str | None = None, journal: Path | None = None) -> pd.DataFrame:
    """The sweep table (see `table`) of every point of the sweep (or `sweep_points`)."""
    return table(sweep_rows(scenario, replications, jobs, progress, sweep_points, backend_name, address, journal))


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


def sweep_to(scenario: Scenario, out: OutputDir, jobs: int | None = None, progress: bool = True,
             replications: int = 1, backend_name: str = "local", address: str | None = None
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`moe2sim sweep`: run the scenario's sweep, journaling rows in `out`/sweep.partial.jsonl (a restart on
    the same folder resumes), and write sweep.csv, paired.csv (R ≥ 2) and report.html. Returns the table and
    the paired differences."""
    from moe2sim.report.html import setup_rows, sweep_section, sweep_setup_rows, write_report

    names = ("sweep.csv", "paired.csv", "report.html")
    out.check((*names, JOURNAL))
    if scenario.sweep.simulate:  # before any worker starts: queries must arrive in the simulations
        Twin.build(scenario, solve=False).check_arrivals()
    out.adopt([JOURNAL])
    rows = sweep_rows(scenario, replications, jobs, progress, None, backend_name, address, out.path / JOURNAL)
    df, diffs = table(rows), paired(rows)
    with out.staged(keep=[JOURNAL]) as stage:
        df.to_csv(stage / "sweep.csv", index=False)
        if replications >= 2:
            diffs.to_csv(stage / "paired.csv", index=False)
        write_report(stage / "report.html", f"moe2sim sweep: {scenario.name}", None, None, {}, scenario.description,
                     sweep_section(df, [e.name for e in scenario.experts], [c.name for c in scenario.categories],
                                   diffs),
                     [*setup_rows(scenario), *sweep_setup_rows(scenario, moe2_selection(scenario))])
    return df, diffs
