"""`moe2sim run` (simulate a scenario) and `moe2sim rollout` (an agent driving the budget
environment): both publish the same per-query records, summary.json and report.html through
report/publish.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from moe2sim.experiments.replications import replicate
from moe2sim.report.outputs import OutputDir
from moe2sim.report.publish import RUN_FILES, publish, rollout_results, run_results
from moe2sim.report.summary import run_summary
from moe2sim.scenario import Scenario
from moe2sim.twin import Twin
from moe2sim.twin.factory import moe2_selection


def preflight(scenario: Scenario, out: OutputDir) -> Twin:
    """Everything `run` checks before simulating (and `validate` checks alone): the output folder, every
    input as the twin reads it, that queries arrive, and, with a sweep block, MoE²'s selection problem."""
    from moe2sim.experiments.sweep import method_twin

    out.check(RUN_FILES)
    twin = Twin.build(scenario)
    twin.check_arrivals()
    if scenario.sweep is not None:
        method_twin(scenario, "moe2")
    return twin


def run_scenario(scenario: Scenario, out: OutputDir | Path, seed: int | None = None, progress: bool = True,
                 replications: int = 1, executor_name: str = "local", jobs: int | None = None,
                 address: str | None = None) -> dict[str, Any]:
    """Simulate the scenario `replications` times (experiments/replications.py): summary.json holds replication
    0's metrics (the scenario's own seed) and every metric's 95 % interval; records are replication 0's;
    replications.csv (R ≥ 2) one row of metrics per replication. A scenario with a sweep block also sweeps, with
    the same replications (sweep.csv, and paired.csv for R ≥ 2). Replications 1.. and the sweep run on the
    executor the user picks with --backend (`local`: jobs processes, default all cores; `ray`)."""
    from moe2sim.experiments.select import selection_account
    from moe2sim.experiments.sweep import sweep_rows

    out = OutputDir.of(out)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    twin = preflight(scenario, out)
    moe2_method = moe2_selection(scenario)
    summary, queries, legs, per_replication = replicate(twin, replications, progress, executor_name, jobs, address)
    summary = {**summary, "selection": selection_account(scenario, twin.policy)}
    rows = (sweep_rows(scenario, replications, jobs, progress, None, executor_name, address)
            if scenario.sweep is not None else None)
    publish(out, run_results(scenario, summary, queries, legs, twin.policy.subset, per_replication, rows, moe2_method))
    return summary


def rollout(scenario_path: str, overrides: list[str], agent_name: str, out: OutputDir | Path, seed: int,
            windows: int | None = None) -> dict[str, Any]:
    """One episode of an agent in BudgetEnv; the simulator's records plus a per-window log and plot."""
    from moe2sim.agents import build_agent, run_episode
    from moe2sim.envs.budget_env import BudgetEnv

    out = OutputDir.of(out)
    out.check(RUN_FILES)
    env = BudgetEnv(scenario_path, overrides, windows=windows)
    agent = build_agent(agent_name, env)
    total, log = run_episode(env, agent, seed)
    queries, legs = env.records()
    summary = {"scenario": env.scenario.name, "seed": seed, **run_summary(env.twin, queries, legs, env.sim.result().run_s),
               "agent": agent_name, "episode_reward": total, "windows": len(log)}
    publish(out, rollout_results(env.scenario, agent_name, seed, summary, queries, legs, pd.DataFrame(log)))
    return summary
