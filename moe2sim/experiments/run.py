"""`moe2sim run` (simulate a scenario) and `moe2sim rollout` (an agent driving the budget
environment): both write the same per-query records, summary.json and report.html through the
output contract of experiments/outputs.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from moe2sim.experiments.outputs import OutputDir, write_json
from moe2sim.experiments.replications import replicate, run_summary
from moe2sim.scenario import Scenario
from moe2sim.twin import Twin

RESULT_NAMES = ("queries.parquet", "queries.csv", "legs.parquet", "legs.csv", "summary.json", "report.html",
                "sweep.csv", "windows.csv", "replications.csv", "paired.csv")


def write_table(df: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        df.to_parquet(path.with_suffix(".parquet"), index=False)
    else:
        df.to_csv(path.with_suffix(".csv"), index=False)


def twin_summary(twin: Twin, queries: pd.DataFrame, legs: pd.DataFrame, run_s: float) -> dict[str, Any]:
    return {"scenario": twin.scenario.name, "seed": twin.scenario.seed, **run_summary(twin, queries, legs, run_s)}


def write_results(stage: Path, scenario: Scenario, title: str, queries: pd.DataFrame, legs: pd.DataFrame,
                  summary: dict[str, Any], extra_html: str = "", setup: list[list[str]] | None = None) -> None:
    """Records, summary.json and (unless the scenario turns it off) report.html; `setup`: the report's
    set-up table (default: the scenario's policy and budgets)."""
    from moe2sim.report.html import setup_rows, write_report

    write_table(queries, stage / "queries", scenario.outputs.format)
    write_table(legs, stage / "legs", scenario.outputs.format)
    write_json(stage / "summary.json", summary)
    if scenario.outputs.report:
        write_report(stage / "report.html", title, summary, queries,
                     {c.name: c.latency_budget_s for c in scenario.categories}, scenario.description, extra_html,
                     setup if setup is not None else setup_rows(scenario))


def preflight(scenario: Scenario, out: OutputDir) -> Twin:
    """Everything `run` checks before simulating (and `validate` checks alone): the output folder, every
    input as the twin reads it, that queries arrive, and, with a sweep block, MoE²'s selection problem."""
    from moe2sim.experiments.sweep import method_twin

    out.check(RESULT_NAMES)
    twin = Twin.build(scenario)
    twin.check_arrivals()
    if scenario.sweep is not None:
        method_twin(scenario, "moe2")
    return twin


def run_scenario(scenario: Scenario, out: OutputDir | Path, seed: int | None = None, progress: bool = True,
                 replications: int = 1, backend_name: str = "local", jobs: int | None = None,
                 address: str | None = None) -> dict[str, Any]:
    """Simulate the scenario `replications` times (experiments/replications.py): summary.json holds replication
    0's metrics (the scenario's own seed) and every metric's 95 % interval; records are replication 0's;
    replications.csv (R ≥ 2) one row of metrics per replication. A scenario with a sweep block also sweeps, with
    the same replications (sweep.csv, and paired.csv for R ≥ 2). Replications 1.. and the sweep run on the
    backend (`local`: jobs processes, default all cores; `ray`)."""
    from moe2sim.experiments.select import selection_account, selection_rows
    from moe2sim.experiments.sweep import paired, sweep_rows, table
    from moe2sim.twin.factory import moe2_selection
    from moe2sim.report.html import setup_rows, sweep_section, sweep_setup_rows

    out = OutputDir.of(out)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    twin = preflight(scenario, out)
    summary, queries, legs, per_replication = replicate(twin, replications, progress, backend_name, jobs, address)
    account = selection_account(scenario, twin.policy)
    summary = {**summary, "selection": account}
    extra = ""
    rows = (sweep_rows(scenario, replications, jobs, progress, None, backend_name, address)
            if scenario.sweep is not None else None)
    setup = [*setup_rows(scenario, twin.policy.subset), *selection_rows(account),
             *(sweep_setup_rows(scenario, moe2_selection(scenario)) if rows is not None else [])]
    with out.staged() as stage:
        if replications >= 2:
            write_table(per_replication, stage / "replications", "csv")
        if rows is not None:
            sweep, diffs = table(rows), paired(rows)
            write_table(sweep, stage / "sweep", "csv")
            if replications >= 2:
                write_table(diffs, stage / "paired", "csv")
            extra = sweep_section(sweep, [e.name for e in scenario.experts], [c.name for c in scenario.categories],
                                  diffs)
        write_results(stage, scenario, f"moe2sim run: {scenario.name} (seed {scenario.seed})", queries, legs,
                      summary, extra, setup)
    return summary


def rollout(scenario_path: str, overrides: list[str], agent_name: str, out: OutputDir | Path, seed: int,
            windows: int | None = None) -> dict[str, Any]:
    """One episode of an agent in BudgetEnv; the simulator's records plus a per-window log and plot."""
    from moe2sim.envs.agents import build_agent, run_episode
    from moe2sim.envs.budget_env import BudgetEnv
    from moe2sim.report.html import setup_rows, windows_section

    out = OutputDir.of(out)
    out.check(RESULT_NAMES)
    env = BudgetEnv(scenario_path, overrides, windows=windows)
    agent = build_agent(agent_name, env)
    total, log = run_episode(env, agent, seed)
    queries, legs = env.records()
    summary = twin_summary(env.twin, queries, legs, env.sim.result().run_s)
    summary = {**summary, "seed": seed, "agent": agent_name, "episode_reward": total, "windows": len(log)}
    windows_df = pd.DataFrame(log)
    with out.staged() as stage:
        write_table(windows_df, stage / "windows", "csv")
        setup = [["agent", agent_name], *setup_rows(env.scenario),
                 ["budgets", "the agent sets them every window (figures below); above: the starting budgets"]]
        write_results(stage, env.scenario, f"moe2sim rollout: {agent_name} on {env.scenario.name} (seed {seed})",
                      queries, legs, summary, windows_section(windows_df, [c.name for c in env.scenario.categories]),
                      setup)
    return summary
