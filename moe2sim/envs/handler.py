"""Observation, action and reward of the budget environment, apart from the simulation.

Action (Box, shape 1 + M, values in [-1, 1]); a ∈ [-1, 1] maps log-linearly onto a range:
    a[0]      -> energy budget Ē ∈ env.energy_budget_J            (J per query)
    a[1 + m]  -> latency scale s_m ∈ env.latency_scale;  T̄_m = s_m × the scenario's budget of m
Discrete variant: Discrete(L²), L = env.discrete_levels: index = i·L + j sets Ē to the i-th and every
category's scale to the j-th of L log-spaced levels (budgets the selector cannot meet keep the subset in
force and set info["infeasible"]).
Subset variant: Discrete(1 + K): 0 holds the subset in force, a ≥ 1 sets the budgets of the a-th distinct
subset the selector reaches (moe2sim/envs/actions.py; env.unwrapped.action_table.rows()). Recommended:
every action is a distinct, feasible decision.

Observation (Dict; what a controller sees at the end of a window):
    arrival_rate   (M,)  queries/s that arrived in the window, per category
    queue          (N,)  requests waiting at each expert at the window's end
    utilisation    (N,)  busy slot-seconds / (slots · window) per expert
    latency_p50    (M,)  s, of the answers completed in the window (0 if none)
    latency_p95    (M,)  s, idem
    accuracy       (1,)  fraction of the window's completed answers that are right
    energy_spent   (1,)  cumulative active energy / episode allowance
    time_of_day    (2,)  sin, cos of 2π·t/86400
    budgets        (1+M,) the budgets in force, as the action that set them (in [-1, 1])

Reward per window: see RewardWeights — correct answers, minus answers past their category's latency
budget in the scenario (not the budget the agent set), minus kJ of active energy spent beyond the
episode allowance (each weighted), minus the site's energy price times the kJ spent. The last window's
reward also counts the answers still in flight when the episode ends (the simulation finishes them):
a backlog left at the end is charged, not dropped.
"""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

from moe2sim.envs.actions import HOLD, ActionTable
from moe2sim.envs.window import WindowStats
from moe2sim.scenario import EnvConfig, Scenario
from moe2sim.selection.budgets import Budgets
from moe2sim.sim.site import SiteSchedule

DAY_S = 86_400.0


def _lerp_log(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.exp(np.log(lo) + (np.clip(a, -1, 1) + 1) / 2 * (np.log(hi) - np.log(lo)))


def _unlerp_log(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(2 * (np.log(v) - np.log(lo)) / (np.log(hi) - np.log(lo)) - 1, -1, 1)


class BudgetHandler:
    """Maps actions to budgets, simulation measurements to observations and rewards."""

    def __init__(self, scenario: Scenario, cfg: EnvConfig, slots: np.ndarray, site: SiteSchedule,
                 table: ActionTable | None = None):
        self.cfg = cfg
        self.base_latency = np.array([c.latency_budget_s for c in scenario.categories])
        self.slots = slots
        self.site = site
        self.table = table
        self.names = site.names
        m, n = len(self.base_latency), len(slots)
        if cfg.action == "box":
            self.action_space: spaces.Space = spaces.Box(-1.0, 1.0, shape=(1 + m,), dtype=np.float32)
        elif cfg.action == "discrete":
            self.action_space = spaces.Discrete(cfg.discrete_levels ** 2)
        else:
            if table is None:
                raise ValueError("the subset action needs an action table")
            self.action_space = spaces.Discrete(table.n_actions)
        unbounded = dict(low=0.0, high=np.inf, dtype=np.float32)
        self.observation_space = spaces.Dict({
            "arrival_rate": spaces.Box(shape=(m,), **unbounded),
            "queue": spaces.Box(shape=(n,), **unbounded),
            "utilisation": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
            "latency_p50": spaces.Box(shape=(m,), **unbounded),
            "latency_p95": spaces.Box(shape=(m,), **unbounded),
            "accuracy": spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
            "energy_spent": spaces.Box(shape=(1,), **unbounded),
            "time_of_day": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
            "budgets": spaces.Box(-1.0, 1.0, shape=(1 + m,), dtype=np.float32),
            "subset": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
            "expert_speed": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
            "latency_target": spaces.Box(shape=(1,), **unbounded),
            "energy_price": spaces.Box(shape=(1,), **unbounded),
            "progress": spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
        })

    def box_action(self, action) -> np.ndarray | None:
        """The action as a point of the Box parameterisation (every variant); None: hold."""
        if self.cfg.action == "box":
            return np.asarray(action, np.float32)
        if self.cfg.action == "subset":
            return None if int(action) == HOLD else self.table.boxes[int(action) - 1]
        levels = self.cfg.discrete_levels
        i, j = divmod(int(action), levels)
        grid = np.linspace(-1, 1, levels)
        return np.r_[grid[i], np.full(len(self.base_latency), grid[j])].astype(np.float32)

    def budgets(self, box: np.ndarray) -> Budgets:
        energy = float(_lerp_log(box[0], *self.cfg.energy_budget_J))
        scale = _lerp_log(box[1:], *self.cfg.latency_scale)
        return Budgets(energy, self.base_latency * scale)

    def action_for(self, budgets: Budgets) -> np.ndarray:
        """The Box action that sets these budgets (clipped to the ranges)."""
        return np.r_[_unlerp_log(np.array([budgets.energy_J]), *self.cfg.energy_budget_J),
                     _unlerp_log(budgets.latency_s / self.base_latency, *self.cfg.latency_scale)].astype(np.float32)

    def observation(self, w: WindowStats, box: np.ndarray, subset: list[str], progress: float) -> dict[str, np.ndarray]:
        pcts = np.array([np.percentile(x, (50, 95)) if len(x) else (0.0, 0.0) for x in w.latencies],
                        np.float32).reshape(-1, 2)  # one sort per category for both percentiles

        phase = 2 * np.pi * w.end_s / DAY_S
        f32 = np.float32
        return {
            "arrival_rate": (w.arrivals / w.duration_s).astype(f32),
            "queue": w.queue.astype(f32),
            "utilisation": np.clip(w.busy_s / (self.slots * w.duration_s), 0, 1).astype(f32),
            "latency_p50": pcts[:, 0].copy(),
            "latency_p95": pcts[:, 1].copy(),
            "accuracy": np.array([w.correct / w.completed if w.completed else 0.0], f32),
            "energy_spent": np.array([w.energy_cum_J / self.cfg.energy_allowance_J], f32),
            "time_of_day": np.array([np.sin(phase), np.cos(phase)], f32),
            "budgets": np.array(box, f32),
            "subset": np.isin(self.names, subset).astype(f32),
            "expert_speed": self.site.speed(w.end_s).astype(f32),
            "latency_target": np.array([self.site.latency_target.at(w.end_s)], f32),
            "energy_price": np.array([self.site.energy_price.at(w.end_s)], f32),
            "progress": np.array([min(progress, 1.0)], f32),
        }

    def reward(self, w: WindowStats) -> float:
        r = self.cfg.reward
        allowance = self.cfg.energy_allowance_J
        over = max(0.0, w.energy_cum_J - allowance) - max(0.0, w.energy_cum_J - w.energy_J - allowance)
        price = float(self.site.energy_price.at(w.start_s))
        return float(r.quality * w.correct - r.latency_violation * w.late - r.energy_overshoot_per_kJ * over / 1e3
                     - price * w.energy_J / 1e3)
