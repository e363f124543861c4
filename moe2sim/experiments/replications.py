"""Independent replications of a scenario and the intervals of its summary metrics.

Seeds: replication i (0-based) of a scenario with seed s runs with seed (s + i) mod 2^63, so
replication 0 is exactly the single run of the scenario (`moe2sim run` without --replications),
and asking for more replications later only adds runs. Each seed feeds np.random.SeedSequence
(Twin.streams), which hashes it: the streams of seeds s and s + 1 are independent. (Two scenarios
whose seeds differ by less than R share replications; give unrelated scenarios distant seeds.)

Estimator: with R ≥ 2 every metric's interval is the Student-t interval across the R replications
(report/intervals.py); with R = 1, batch means within the one run (per-query metrics only). The
summary says which in `interval_method`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from moe2sim.experiments.backends import Job, backend
from moe2sim.report.intervals import across, batch_means, flatten
from moe2sim.report.summary import query_metrics, summarize
from moe2sim.scenario import Scenario
from moe2sim.twin import Twin

SEED_SPACE = 2**63
BATCHES = 20
WARMUP = 0.05


def replication_seeds(seed: int, replications: int) -> list[int]:
    """The seeds of replications 0..R-1: seed, seed + 1, ... (mod 2^63)."""
    return [(seed + i) % SEED_SPACE for i in range(replications)]


def run_summary(twin: Twin, queries: pd.DataFrame, legs: pd.DataFrame, run_s: float) -> dict[str, Any]:
    """summary.json's metrics of one run (report/summary.py), the run length at least the last finish."""
    return summarize(queries, legs, {e.name: e.idle_power_W for e in twin.experts},
                     {e.name: e.slots for e in twin.experts}, max(run_s, float(queries["finish_s"].max())),
                     {e.name: p.boundary for e, p in zip(twin.experts, twin.profiles)}, twin.scenario.mixed_boundaries)


def per_query_metrics(queries: pd.DataFrame) -> dict[str, Any]:
    """The metrics of summary.json that are averages or quantiles over queries (overall and per category):
    accuracy, latency_s (mean and percentiles), energy_J_per_query, budget_violations.rate. Counts and totals have no batch values."""
    def keep(block: dict[str, Any]) -> dict[str, Any]:
        return {"accuracy": block["accuracy"], "latency_s": {k: v for k, v in block["latency_s"].items() if k != "max"},
                "energy_J_per_query": block["energy_J_per_query"],
                "budget_violations": {"rate": block["budget_violations"]["rate"]}}

    metrics = query_metrics(queries)
    return {**keep(metrics), "categories": {c: keep(b) for c, b in metrics["categories"].items()}}


def interval_block(runs: list[dict[str, Any]], first_queries: pd.DataFrame) -> dict[str, Any]:
    """`interval_method` and `intervals` for summary.json: across the runs if there are two or more,
    else batch means of the one run's queries."""
    if len(runs) >= 2:
        return {"interval_method": f"replications ({len(runs)})",
                "intervals": across([flatten(r) for r in runs])}
    return {"interval_method": f"batch means ({BATCHES} batches, first {WARMUP:.0%} of queries dropped)",
            "intervals": batch_means(first_queries, per_query_metrics, BATCHES, WARMUP)}


def _build(scenario: Scenario, group: str) -> Twin:
    return Twin.build(scenario)


def _summaries(scenario: Scenario, twin: Twin, seeds: list[int]) -> list[tuple[int, dict[str, Any]]]:
    """A task: the summaries of the runs with these seeds (records stay on the worker)."""
    out = []
    for seed in seeds:
        result, queries, legs = twin.simulate(seed=seed)
        out.append((seed, run_summary(twin, queries, legs, result.run_s)))
    return out


def replicate(twin: Twin, replications: int, progress: bool = False, backend_name: str = "local",
              jobs: int | None = 1, address: str | None = None
              ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run `twin` R times (seeds from replication_seeds). Returns the summary (replication 0's metrics at the
    top level, as a single run writes them, plus the interval block and the seeds), replication 0's
    query and leg records, and one row of flattened metrics per replication. Replication 0 runs here;
    the others on the backend (experiments/backends.py; default: here too, one after another), which
    rebuilds the twin from `twin.scenario` and returns only their summaries."""
    seeds = replication_seeds(twin.scenario.seed, replications)
    result, queries, legs = twin.simulate(seed=seeds[0], progress=progress)
    runs = {seeds[0]: run_summary(twin, queries, legs, result.run_s)}
    rest = seeds[1:]
    if rest and backend_name == "local" and jobs == 1:
        runs.update(_summaries(twin.scenario, twin, rest))
    elif rest:
        with backend(backend_name, jobs, address) as engine:
            chunks = np.array_split(np.asarray(rest, dtype=object), min(len(rest), engine.workers))
            tasks = [("twin", [int(x) for x in c]) for c in chunks if len(c)]
            for group in engine.run(Job(twin.scenario, _build, _summaries), tasks):
                runs.update(group)
    ordered = [runs[s] for s in seeds]
    table = pd.DataFrame([{"replication": i, "seed": s, **flatten(r)} for i, (s, r) in enumerate(zip(seeds, ordered))])
    summary = {"scenario": twin.scenario.name, "seed": twin.scenario.seed, **ordered[0],
               **interval_block(ordered, queries), "replications": {"n": replications, "seeds": seeds}}
    return summary, queries, legs, table
