"""The named agents (registry AGENTS, `moe2sim rollout --agent NAME`) and build_agent, which also loads a
saved one (.pt)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import gymnasium as gym

from moe2sim.agents.network import TorchAgent
from moe2sim.agents.rules import Agent, Constant, FixedBudgets, QueueRule, SiteRule, budget_env_of
from moe2sim.envs.budget_env import BudgetEnv
from moe2sim.errors import InputError

AGENTS: dict[str, Callable[[BudgetEnv], Agent]] = {
    "fixed": FixedBudgets, "rule": QueueRule, "constant": Constant, "site": SiteRule,
    "site-pace": lambda env: SiteRule(env, pace=True), "site-queue": lambda env: SiteRule(env, busy_queue=3.0)}


def build_agent(name: str, env: gym.Env) -> Agent:
    """A named agent of AGENTS, or the path of a saved agent (.pt)."""
    env = budget_env_of(env)
    if name in AGENTS:
        return AGENTS[name](env)
    agent = TorchAgent.load(Path(name))
    if agent.action_type != env.cfg.action:
        raise InputError(name, "action", f"the agent was trained for a {agent.action_type} action, the env has "
                                         f"{env.cfg.action} (set --set env.action={agent.action_type})")
    return agent
