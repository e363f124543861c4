"""BudgetEnv: a Gymnasium environment over the SimPy twin where an agent sets MoE²'s budgets.

One step = one control window of simulated time (env.window_s). The agent's action sets the
energy budget and the per-category latency budgets for the next window; the policy's coarse
level re-solves the expert subset for them (box/discrete actions: if no subset meets them, the previous
subset stays and info["infeasible"] is True; subset actions are all feasible, 0 holds); the gate and
aggregation do the rest. The scenario's `site:` (outages, latency targets, energy price by time of
day) applies; the selector plans with the experts' nominal profiles, so reacting to the site is the
agent's job (the observation shows it). The episode is
env.windows windows long (truncation; it never terminates early); the answers still in flight at its
end are finished and counted in the last reward (and in that step's info["after_end"]). Load changes within an episode
as the scenario's arrival process says (diurnal with bursts, or a replayed file). Spaces and
reward: moe2sim/envs/handler.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from pydantic import ValidationError

from moe2sim.data.bundled import bundled_path
from moe2sim.envs.actions import ActionTable, action_table
from moe2sim.envs.handler import BudgetHandler
from moe2sim.envs.window import WindowMeter, WindowStats
from moe2sim.errors import InputError, from_validation
from moe2sim.scenario import EnvConfig, Scenario, load_scenario
from moe2sim.selection.budgets import budgets_of
from moe2sim.selection.solvers import InfeasibleBudgets
from moe2sim.sim.engine import EdgeSimulation
from moe2sim.sim.site import SiteSchedule
from moe2sim.twin import Twin
from moe2sim.twin.factory import selecting


ENV_KWARGS = ("scenario", "overrides", "window_s", "windows", "action", "render_mode")


def _scenario(scenario: Any, overrides: Any) -> Scenario:
    """The constructor's scenario argument (a path, a bundled name, a Scenario or None) with `overrides`."""
    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in _iterable(overrides, "overrides")):
        raise TypeError(f"BudgetEnv(overrides=...): expected a list of 'dotted.key=value' strings, got {overrides!r}")
    if scenario is None:
        scenario = bundled_path("scenarios/budget_env.yaml")
    if isinstance(scenario, Scenario):
        if overrides:
            raise ValueError("BudgetEnv(overrides=...): overrides apply to a scenario file, not to a Scenario object "
                             "(use its model_copy)")
        return scenario
    if not isinstance(scenario, (str, Path)):
        raise TypeError(f"BudgetEnv(scenario=...): expected a path, a bundled scenario's name or a Scenario, "
                        f"got {type(scenario).__name__}")
    return load_scenario(scenario, list(overrides))


def _iterable(value: Any, name: str) -> list:
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"BudgetEnv({name}=...): expected a list, got {type(value).__name__}") from None


def _env_config(sc: Scenario, kwargs: dict[str, Any]) -> EnvConfig:
    """The scenario's env block with the constructor's keyword arguments; a bad one is an error naming it."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return EnvConfig.model_validate({**(sc.env or EnvConfig()).model_dump(), **given})
    except ValidationError as exc:
        raise from_validation("BudgetEnv", exc, {(k,): f"BudgetEnv({k}={v!r})" for k, v in given.items()}) from None


def _episode_scenario(sc: Scenario, cfg: EnvConfig) -> Scenario:
    """The scenario an episode simulates: window_s × windows long, re-validated (its run length limits)."""
    update = {"env": cfg.model_dump(), "duration_s": cfg.window_s * cfg.windows, "queries": None}
    try:
        return Scenario.model_validate({**sc.model_dump(), **update, "file": sc.file})
    except ValidationError as exc:
        err = from_validation(sc.file, exc)
        raise InputError("BudgetEnv(window_s, windows)", f"{cfg.window_s:g} s × {cfg.windows} windows",
                         f"{err.field + ': ' if err.field else ''}{err.message}") from None


class BudgetEnv(gym.Env):
    """See the module docstring; spaces and reward in moe2sim.envs.handler."""

    metadata = {"render_modes": []}

    def __init__(self, scenario: str | Path | Scenario | None = None,
                 overrides: list[str] | tuple[str, ...] = (), window_s: float | None = None,
                 windows: int | None = None, action: str | None = None, render_mode: str | None = None,
                 **unknown: Any):
        if unknown:
            raise TypeError(f"BudgetEnv got unknown keyword argument(s) {sorted(unknown)}; it takes {ENV_KWARGS}")
        if render_mode is not None:  # TypeError: what Stable-Baselines3's make_vec_env expects, then retries without
            raise TypeError(f"render_mode={render_mode!r} is not supported: BudgetEnv does not render "
                            "(moe2sim rollout draws an episode)")
        sc = _scenario(scenario, overrides)
        cfg = _env_config(sc, {"window_s": window_s, "windows": windows, "action": action})
        sc = _episode_scenario(selecting(sc), cfg)
        self.scenario, self.cfg = sc, cfg
        self.twin = Twin.build(sc)
        self.site = SiteSchedule.of(sc)
        m = len(sc.categories)
        scratch = BudgetHandler(sc, cfg.model_copy(update={"action": "box"}), np.zeros(0), self.site)
        self.action_table: ActionTable | None = (
            action_table(self.twin.policy.selector, scratch.budgets, m, cfg.subset_grid, list(self.site.names),
                         self.site.exclusions())
            if cfg.action == "subset" else None)
        self.handler = BudgetHandler(sc, cfg, np.array([e.slots for e in self.twin.experts], float), self.site,
                                     self.action_table)
        self.action_space = self.handler.action_space
        self.observation_space = self.handler.observation_space
        self.initial_budgets = budgets_of(sc)
        self.sim: EdgeSimulation | None = None
        self.window = 0
        self.done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if options:
            raise ValueError(f"BudgetEnv.reset: unknown option(s) {sorted(map(str, options))}: it takes none "
                             "(set budgets with step's action, the set-up with the constructor's arguments)")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
            raise TypeError(f"BudgetEnv.reset: seed must be a whole number >= 0 or None, got {seed!r}")
        super().reset(seed=seed)
        # independent streams: the load must not depend on the service draws the agent's subsets cause
        self.box = self.handler.action_for(self.initial_budgets)
        self.sim, arrivals = self.twin.simulation(int(self.np_random.integers(2**63)))
        self.meter = WindowMeter(self.sim, self.handler.base_latency, self.twin.policy.aggregation_s,
                                 self.site.latency_target)
        self.sim.start(self.twin.workload.batches(arrivals, self.cfg.window_s), self.meter.on_batch)
        self.window, self.done = 0, False
        empty = WindowStats.empty(len(self.scenario.categories), len(self.twin.experts), self.cfg.window_s)
        return self.observe(empty), {
            "energy_budget_J": self.initial_budgets.energy_J, "latency_budget_s": self.initial_budgets.latency_s.copy()}

    def step(self, action):
        if self.done:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        if not self.action_space.contains(np.asarray(action, self.action_space.dtype)
                                          if isinstance(self.action_space, gym.spaces.Box) else action):
            raise ValueError(f"action {action!r} is not in the action space {self.action_space} "
                             "(for a Box, wrap the env with gymnasium.wrappers.ClipAction)")
        box = self.handler.box_action(action)  # None: hold the subset in force
        infeasible = False
        if box is not None and self.action_table is not None:
            row = int(action) - 1
            self.sim.policy = self.sim.policy.with_selection(self.action_table.budgets[row],
                                                             self.action_table.selections[row])
            self.box = box
        elif box is not None:
            try:
                self.sim.policy = self.sim.policy.with_budgets(self.handler.budgets(box))
                self.box = box
            except InfeasibleBudgets:
                infeasible = True
        t0, t1 = self.window * self.cfg.window_s, (self.window + 1) * self.cfg.window_s
        self.sim.advance(t1)
        stats = self.meter.close_window(t0, t1)
        self.window += 1
        truncated = self.window >= self.cfg.windows
        self.done = truncated
        reward = self.handler.reward(stats)
        measured = ("completed", "correct", "late", "energy_J")
        after_end = {}
        if truncated:  # the answers in flight finish and count: leaving a backlog is not free
            self.sim.advance()
            drained = self.meter.close_window(t1, np.inf)
            reward += self.handler.reward(drained)
            after_end = {"after_end": {k: getattr(drained, k) for k in measured}}
        policy = self.sim.policy
        info = {"energy_budget_J": policy.budgets.energy_J, "latency_budget_s": policy.budgets.latency_s.copy(),
                "infeasible": infeasible, "hold": box is None, "subset": policy.subset,
                **{k: getattr(stats, k) for k in measured}, **after_end}
        return self.observe(stats), reward, False, truncated, info

    def observe(self, stats: WindowStats) -> dict[str, np.ndarray]:
        return self.handler.observation(stats, self.box, self.sim.policy.subset, self.window / self.cfg.windows)

    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Per-query and per-leg records of the episode (the simulator's schema), after letting the
        queries still in flight finish."""
        if self.sim is None or not self.done:
            raise RuntimeError("records() is available once an episode has ended")
        self.sim.advance()
        return self.twin.records(self.sim.result())
