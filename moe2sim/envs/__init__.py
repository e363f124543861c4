"""Gymnasium environments: an agent sets MoE²'s energy and latency budgets as load changes.

Registered ids (ENV_IDS), usable with gymnasium.make once moe2sim.envs is imported, or in any process
(a vector env's or Ray's workers) as gymnasium.make("moe2sim.envs:moe2sim/<name>"): gymnasium imports
the module named before the colon (Gymnasium 1.x loads no plugin entry points).

- moe2sim/Budget-v0, moe2sim/BudgetDiscrete-v0: the MoE² testbed under diurnal, bursty load
  (scenarios/budget_env.yaml), Box / Discrete(25) budget actions;
- moe2sim/Paper-v0, moe2sim/Quickstart-v0: the bundled scenarios;
- the benchmark suite (SUITE; subset actions, benchmarks/bench_env_suite.py): moe2sim/Suite-Paper-v0,
  Suite-Rationing-v0, Suite-Outage-v0, Suite-Peak-v0.

Keyword arguments of gymnasium.make: scenario, overrides, window_s, windows, action
("box" | "discrete" | "subset"); anything else is a TypeError naming it.

Modules: budget_env (the env), handler (spaces, observation, reward), actions (the subset action table),
window (what one window measured, and the meter that measures it). Agents that act in it and their
trainers: moe2sim.agents.
"""
from gymnasium.envs.registration import register, registry

from moe2sim.data.bundled import bundled_path
from moe2sim.envs.actions import ActionTable
from moe2sim.envs.budget_env import BudgetEnv
from moe2sim.envs.handler import BudgetHandler
from moe2sim.envs.window import WindowMeter, WindowStats

SUITE = {
    "moe2sim/Suite-Paper-v0": dict(scenario="suite_paper.yaml"),
    "moe2sim/Suite-Rationing-v0": dict(scenario="suite_rationing.yaml"),
    "moe2sim/Suite-Outage-v0": dict(scenario="suite_outage.yaml"),
    "moe2sim/Suite-Peak-v0": dict(scenario="suite_peak.yaml"),
}
ENV_IDS = {
    "moe2sim/Budget-v0": dict(scenario="budget_env.yaml"),
    "moe2sim/BudgetDiscrete-v0": dict(scenario="budget_env.yaml", action="discrete"),
    "moe2sim/Paper-v0": dict(scenario="paper.yaml"),
    "moe2sim/Quickstart-v0": dict(scenario="quickstart.yaml"),
    **SUITE,
}


def register_envs() -> None:
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point="moe2sim.envs.budget_env:BudgetEnv",
                     kwargs={**kwargs, "scenario": str(bundled_path(f"scenarios/{kwargs['scenario']}"))})


register_envs()

__all__ = ["ActionTable", "BudgetEnv", "BudgetHandler", "WindowMeter", "WindowStats", "ENV_IDS", "SUITE",
           "register_envs"]
