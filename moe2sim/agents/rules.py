"""Rule agents that set the budgets in BudgetEnv: fixed (the paper's setting), a queue rule, a constant
action, and for subset actions a site rule (avoid experts that are down or slow), the same with energy
pacing or a switch to the fastest subset under load. All act on the env's observation dict and return an
action of the env's action space. They take the env as gymnasium.make returns it (wrapped) or bare;
wrappers that change the observation (e.g. FlattenObservation) do not fit.
"""
from __future__ import annotations

from typing import Protocol

import gymnasium as gym
import numpy as np

from moe2sim.envs.actions import ActionTable
from moe2sim.envs.budget_env import BudgetEnv
from moe2sim.errors import InputError
from moe2sim.selection.budgets import Budgets
from moe2sim.selection.solvers import InfeasibleBudgets


class Agent(Protocol):
    """Anything that maps the env's observation dict to an action of its action space."""

    def act(self, obs: dict[str, np.ndarray]): ...


def budget_env_of(env: gym.Env) -> BudgetEnv:
    """The BudgetEnv under any wrappers."""
    if not isinstance(env.unwrapped, BudgetEnv):
        raise TypeError(f"agents act on moe2sim's BudgetEnv, got {type(env.unwrapped).__name__}")
    return env.unwrapped


def nearest_discrete(env: BudgetEnv, box: np.ndarray) -> int:
    """The discrete action whose budgets are closest to a Box action (for discrete envs)."""
    levels = env.cfg.discrete_levels
    grid = np.linspace(-1, 1, levels)
    i = int(np.abs(grid - box[0]).argmin())
    j = int(np.abs(grid - np.mean(box[1:])).argmin())
    return i * levels + j


def action_of(env: BudgetEnv, budgets: Budgets):
    """The env's action for these budgets: the Box point, the nearest discrete action, or the subset
    action whose subset the selector picks for them (else the one whose budgets are nearest)."""
    box = env.handler.action_for(budgets)
    if env.cfg.action == "box":
        return box
    if env.cfg.action == "discrete":
        return nearest_discrete(env, box)
    table = env.action_table
    try:
        subset = tuple(env.twin.policy.selector.select(budgets).subset(list(env.site.names)))
        return table.subsets.index(subset) + 1
    except (InfeasibleBudgets, ValueError):
        return int(np.abs(table.boxes - box).sum(axis=1).argmin()) + 1


def subset_table(env: BudgetEnv) -> ActionTable:
    """The env's subset action table; an InputError if the env has another action type."""
    if env.action_table is None:
        raise InputError("env.action", env.cfg.action, "this agent needs the subset action (env.action: subset)")
    return env.action_table


class FixedBudgets:
    """The scenario's budgets, every window (MoE²'s hand-set budgets)."""

    def __init__(self, env: gym.Env):
        env = budget_env_of(env)
        self.action = action_of(env, env.initial_budgets)

    def act(self, obs: dict[str, np.ndarray]):
        return self.action


class QueueRule:
    """Tighten the latency budgets as queues grow: scale = 1 - (1 - min_scale) * clip(max queue / q_full, 0, 1)
    times the scenario's budgets, which forces the selector onto faster experts under load; the
    energy budget stays at the scenario's."""

    def __init__(self, env: gym.Env, q_full: float = 3.0, min_scale: float = 0.4):
        env = budget_env_of(env)
        self.env, self.q_full, self.min_scale = env, q_full, min_scale
        self.base = env.initial_budgets

    def act(self, obs: dict[str, np.ndarray]):
        pressure = float(np.clip(obs["queue"].max() / self.q_full, 0, 1))
        scale = 1 - (1 - self.min_scale) * pressure
        return action_of(self.env, Budgets(self.base.energy_J, self.base.latency_s * scale))


class Constant:
    """One action every window (default, for subset actions: the action of highest U(S))."""

    def __init__(self, env: gym.Env, action: int | None = None):
        if action is None:
            table = subset_table(budget_env_of(env))
            action = int(np.argmax([s.utility for s in table.selections])) + 1
        self.action = action

    def act(self, obs: dict[str, np.ndarray]):
        return self.action


class SiteRule:
    """Subset actions: the best-ranked action whose experts all run at full speed now (obs expert_speed);
    the ranking defaults to U(S), the benchmark passes the constant actions' training scores. With
    pace=True, the energy allowance is paced: while the share of it spent (obs energy_spent) is ahead of
    the share of the episode's expected queries seen so far, the cheapest (worst-case energy) such action.
    With busy_queue=q, while the longest queue (obs queue) is at least q, the fastest such action (least
    worst-case delay, then most experts, then the ranking)."""

    def __init__(self, env: gym.Env, ranking: list[int] | None = None, pace: bool = False,
                 busy_queue: float | None = None):
        env = budget_env_of(env)
        table = subset_table(env)
        self.ranking = ranking or sorted(range(1, table.n_actions), key=lambda a: -table.selections[a - 1].utility)
        self.members = {a: np.isin(env.site.names, table.subsets[a - 1]) for a in range(1, table.n_actions)}
        self.energy = {a: table.worst_energy_J[a - 1] for a in range(1, table.n_actions)}
        problem = env.twin.policy.selector.problem
        self.speed = {a: (float(problem.delay_of(table.selections[a - 1].mask).max()), -len(table.subsets[a - 1]),
                          self.ranking.index(a)) for a in range(1, table.n_actions)}
        self.pace, self.busy_queue, self.window_s = pace, busy_queue, env.cfg.window_s
        rate = env.scenario.arrivals.expected_rate_per_s()
        if pace and rate is None:
            raise InputError("arrivals", "process", "energy pacing needs the mean arrival rate (not a replayed file)")
        self.expected = rate * env.cfg.window_s * env.cfg.windows if pace else None
        self.seen = 0.0

    def act(self, obs: dict[str, np.ndarray]):
        if obs["progress"][0] == 0:
            self.seen = 0.0  # a new episode
        self.seen += float(obs["arrival_rate"].sum()) * self.window_s
        up = [a for a in self.ranking if (obs["expert_speed"][self.members[a]] >= 1).all()] or self.ranking
        if self.busy_queue is not None and obs["queue"].max() >= self.busy_queue:
            return min(up, key=self.speed.__getitem__)
        if self.pace and obs["energy_spent"][0] > self.seen / self.expected:
            return min(up, key=self.energy.__getitem__)
        return up[0]
