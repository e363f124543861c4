"""Independent replications of a scenario: their seeds, and running them (here or on an executor).

Seeds: replication i (0-based) of a scenario with seed s runs with seed (s + i) mod 2^63, so
replication 0 is exactly the single run of the scenario (`moe2sim run` without --replications),
and asking for more replications later only adds runs. Each seed feeds np.random.SeedSequence
(Twin.streams), which hashes it: the streams of seeds s and s + 1 are independent. (Two scenarios
whose seeds differ by less than R share replications; give unrelated scenarios distant seeds.)

Summary and intervals: report/summary.py (`replicated_summary`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from moe2sim.experiments.executors import WorkSpec, executor
from moe2sim.report.summary import replicated_summary, run_summary
from moe2sim.scenario import Scenario
from moe2sim.twin import Twin

SEED_SPACE = 2**63


def replication_seeds(seed: int, replications: int) -> list[int]:
    """The seeds of replications 0..R-1: seed, seed + 1, ... (mod 2^63)."""
    return [(seed + i) % SEED_SPACE for i in range(replications)]


def _build(scenario: Scenario, group: str) -> Twin:
    return Twin.build(scenario)


def _summaries(scenario: Scenario, twin: Twin, seeds: list[int]) -> list[tuple[int, dict[str, Any]]]:
    """A task: the summaries of the runs with these seeds (records stay on the worker)."""
    out = []
    for seed in seeds:
        result, queries, legs = twin.simulate(seed=seed)
        out.append((seed, run_summary(twin, queries, legs, result.run_s)))
    return out


def replicate(twin: Twin, replications: int, progress: bool = False, executor_name: str = "local",
              jobs: int | None = 1, address: str | None = None
              ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run `twin` R times (seeds from replication_seeds). Returns the summary (replication 0's metrics at the
    top level, as a single run writes them, plus the interval block and the seeds), replication 0's
    query and leg records, and one row of flattened metrics per replication. Replication 0 runs here;
    the others on the executor (experiments/executors.py; default: here too, one after another), which
    rebuilds the twin from `twin.scenario` and returns only their summaries."""
    seeds = replication_seeds(twin.scenario.seed, replications)
    result, queries, legs = twin.simulate(seed=seeds[0], progress=progress)
    runs = {seeds[0]: run_summary(twin, queries, legs, result.run_s)}
    rest = seeds[1:]
    if rest and executor_name == "local" and jobs == 1:
        runs.update(_summaries(twin.scenario, twin, rest))
    elif rest:
        with executor(executor_name, jobs, address) as engine:
            chunks = np.array_split(np.asarray(rest, dtype=object), min(len(rest), engine.workers))
            tasks = [("twin", [int(x) for x in c]) for c in chunks if len(c)]
            for group in engine.run(WorkSpec(twin.scenario, _build, _summaries), tasks):
                runs.update(group)
    summary, table = replicated_summary(twin.scenario.name, seeds, [runs[s] for s in seeds], queries)
    return summary, queries, legs, table
