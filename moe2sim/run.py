"""Writing a run's results: `moe2sim run` (simulate a scenario) and `moe2sim rollout` (an agent
driving the budget environment) write the same per-query records, summary.json and report.html.

Outputs are written into a hidden staging folder next to DIR and moved in only when all of
them exist, so a failed run never leaves a result that looks complete.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from moe2sim.metrics import summarize
from moe2sim.report import sweep_section, windows_section, write_report
from moe2sim.scenario import Scenario
from moe2sim.sweep import run_sweep
from moe2sim.twin import Twin

RESULT_STEMS = ("queries", "legs", "summary", "report", "sweep", "windows")


def write_table(df: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        df.to_parquet(path.with_suffix(".parquet"), index=False)
    else:
        df.to_csv(path.with_suffix(".csv"), index=False)


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A staging folder whose files replace DIR's results only if the block completes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        out.mkdir(exist_ok=True)
        for old in out.iterdir():
            if old.name.split(".")[0] in RESULT_STEMS:
                old.unlink()
        for f in stage.iterdir():
            f.replace(out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def twin_summary(twin: Twin, queries: pd.DataFrame, legs: pd.DataFrame, run_s: float) -> dict[str, Any]:
    summary = summarize(queries, legs, {e.name: e.idle_power_W for e in twin.experts},
                        {e.name: e.slots for e in twin.experts}, max(run_s, float(queries["finish_s"].max())))
    return {"scenario": twin.scenario.name, "seed": twin.scenario.seed, **summary}


def write_results(stage: Path, scenario: Scenario, title: str, queries: pd.DataFrame, legs: pd.DataFrame,
                  summary: dict[str, Any], extra_html: str = "") -> None:
    write_table(queries, stage / "queries", scenario.outputs.format)
    write_table(legs, stage / "legs", scenario.outputs.format)
    (stage / "summary.json").write_text(json.dumps(summary, indent=2))
    if scenario.outputs.report:
        write_report(stage / "report.html", title, summary, queries,
                     {c.name: c.latency_budget_s for c in scenario.categories}, scenario.description, extra_html)


def run_scenario(scenario: Scenario, out: Path, seed: int | None = None, progress: bool = True) -> dict[str, Any]:
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    twin = Twin.build(scenario)
    result, queries, legs = twin.simulate(progress=progress)
    summary = twin_summary(twin, queries, legs, result.run_s)
    with staged(out) as stage:
        extra = ""
        if scenario.sweep is not None:
            df = run_sweep(scenario, progress=progress)
            write_table(df, stage / "sweep", "csv")
            extra = sweep_section(df, [e.name for e in scenario.experts], [c.name for c in scenario.categories])
        write_results(stage, scenario, f"moe2sim run: {scenario.name} (seed {scenario.seed})", queries, legs,
                      summary, extra)
    return summary


def rollout(scenario_path: str, overrides: list[str], agent_name: str, out: Path, seed: int,
            windows: int | None = None) -> dict[str, Any]:
    """One episode of an agent in BudgetEnv; the simulator's records plus a per-window log and plot."""
    from moe2sim.agents import build_agent, run_episode
    from moe2sim.envs.budget_env import BudgetEnv

    env = BudgetEnv(scenario_path, overrides, windows=windows)
    agent = build_agent(agent_name, env)
    total, log = run_episode(env, agent, seed)
    queries, legs = env.records()
    summary = twin_summary(env.twin, queries, legs, env.sim.result().run_s)
    summary = {**summary, "seed": seed, "agent": agent_name, "episode_reward": total, "windows": len(log)}
    windows_df = pd.DataFrame(log)
    with staged(out) as stage:
        write_table(windows_df, stage / "windows", "csv")
        write_results(stage, env.scenario, f"moe2sim rollout: {agent_name} on {env.scenario.name} (seed {seed})",
                      queries, legs, summary, windows_section(windows_df, [c.name for c in env.scenario.categories]))
    return summary
