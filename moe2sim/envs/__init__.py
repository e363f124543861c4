"""Gymnasium environments: an agent sets MoE²'s energy and latency budgets as load changes.

Registered ids, usable with gymnasium.make once moe2sim.envs is imported, or anywhere as
gymnasium.make("moe2sim.envs:moe2sim/Budget-v0") (gymnasium imports the module named before the colon): moe2sim/Budget-v0 (the MoE² testbed under diurnal, bursty load),
moe2sim/BudgetDiscrete-v0 (the same with a discrete action), and one per bundled scenario:
moe2sim/Paper-v0, moe2sim/Quickstart-v0. Keyword arguments of gymnasium.make: scenario, overrides,
window_s, windows, action ("box" | "discrete").
"""
from gymnasium.envs.registration import register, registry

from moe2sim.data.bundled import bundled_path
from moe2sim.envs.budget_env import BudgetEnv
from moe2sim.envs.handler import BudgetHandler, WindowStats

ENV_IDS = {
    "moe2sim/Budget-v0": dict(scenario="budget_env.yaml"),
    "moe2sim/BudgetDiscrete-v0": dict(scenario="budget_env.yaml", action="discrete"),
    "moe2sim/Paper-v0": dict(scenario="paper.yaml"),
    "moe2sim/Quickstart-v0": dict(scenario="quickstart.yaml"),
}


def register_envs() -> None:
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point="moe2sim.envs.budget_env:BudgetEnv",
                     kwargs={**kwargs, "scenario": str(bundled_path(f"scenarios/{kwargs['scenario']}"))})


register_envs()

__all__ = ["BudgetEnv", "BudgetHandler", "WindowStats", "ENV_IDS", "register_envs"]
