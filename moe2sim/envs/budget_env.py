"""BudgetEnv: a Gymnasium environment over the SimPy twin where an agent sets MoE²'s budgets.

One step = one control window of simulated time (env.window_s). The agent's action sets the
energy budget and the per-category latency budgets for the next window; the policy's coarse
level re-solves the expert subset for them (if no subset meets them, the previous subset stays
and info["infeasible"] is True); the gate and aggregation do the rest. The episode is
env.windows windows long (truncation; it never terminates early). Load changes within an episode
as the scenario's arrival process says (diurnal with bursts, or a replayed file). Spaces and
reward: moe2sim/envs/handler.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from moe2sim.envs.handler import BudgetHandler, WindowStats
from moe2sim.policy import UniformRouter
from moe2sim.problem import budgets_of
from moe2sim.scenario import EnvConfig, Scenario, load_scenario
from moe2sim.selection import InfeasibleBudgets
from moe2sim.sim import EdgeSimulation, Plan, query_records
from moe2sim.twin import Twin

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


class WindowMeter:
    """Turns the simulation's plans into per-window measurements, incrementally.

    An answer is late when its latency exceeds its category's budget in the scenario (the service
    level the operator promised), never the budgets the agent set: otherwise loosening the budgets
    would hide lateness from the reward."""

    def __init__(self, sim: EdgeSimulation, latency_budgets_s: np.ndarray, aggregation_s: float):
        self.sim = sim
        self.latency_budgets_s = latency_budgets_s
        self.m = len(latency_budgets_s)
        self.aggregation_s = aggregation_s
        self.arrivals = np.zeros(self.m)
        self.seen = 0
        self.open: list[tuple[Plan, np.ndarray]] = []  # plan, mask of its queries already counted
        self.energy_cum = 0.0

    def on_batch(self, batch) -> None:
        self.arrivals += np.bincount(batch.category, minlength=self.m)

    def close_window(self, t0: float, t1: float) -> WindowStats:
        for plan in self.sim.plans[self.seen:]:
            self.open.append((plan, np.zeros(len(plan.batch), bool)))
        self.seen = len(self.sim.plans)
        n = len(self.sim.servers)
        busy = np.zeros(n)
        lat: list[list[np.ndarray]] = [[] for _ in range(self.m)]
        correct = late = completed = 0
        energy = 0.0
        still_open = []
        for plan, counted in self.open:
            start = plan.start_s
            end = start + plan.ttft_s + plan.decode_s
            started = ~np.isnan(start)
            overlap = np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0, None)
            busy += np.bincount(plan.experts[started], weights=overlap[started], minlength=n)
            finish = np.where(started.all(axis=1), (end + plan.downlink_s).max(axis=1) + self.aggregation_s, np.inf)
            done = ~counted & (finish < t1)
            if done.any():
                cats = plan.batch.category[done]
                latency = finish[done] - plan.batch.arrival_s[done]
                for c in np.unique(cats):
                    lat[c].append(latency[cats == c])
                correct += int((plan.score[done] > 0).sum())
                late += int((latency > self.latency_budgets_s[cats]).sum())
                completed += int(done.sum())
                energy += float(plan.energy_J[done].sum())
                counted |= done
            if not (counted.all() and np.nanmax(end) < t1):
                still_open.append((plan, counted))
        self.open = still_open
        self.energy_cum += energy
        stats = WindowStats(
            duration_s=t1 - t0, end_s=t1, arrivals=self.arrivals.copy(),
            queue=np.array([s.queued for s in self.sim.servers], float), busy_s=busy,
            latencies=[np.concatenate(x) if x else np.empty(0) for x in lat],
            correct=correct, late=late, completed=completed, energy_J=energy, energy_cum_J=self.energy_cum)
        self.arrivals[:] = 0
        return stats


class BudgetEnv(gym.Env):
    """See the module docstring; spaces and reward in moe2sim.envs.handler."""

    metadata = {"render_modes": []}

    def __init__(self, scenario: str | Path | Scenario = SCENARIOS / "budget_env.yaml",
                 overrides: list[str] | tuple[str, ...] = (), window_s: float | None = None,
                 windows: int | None = None, action: str | None = None, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported (metadata: {self.metadata})")
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, list(overrides))
        cfg = (sc.env or EnvConfig()).model_copy(update={k: v for k, v in
                                                         {"window_s": window_s, "windows": windows, "action": action}.items()
                                                         if v is not None})
        cfg = EnvConfig.model_validate(cfg.model_dump())
        selection = sc.policy.selection
        if selection.method == "none":
            selection = selection.model_copy(update={"method": "exact"})
        sc = sc.model_copy(update={"env": cfg, "duration_s": cfg.window_s * cfg.windows, "queries": None,
                                   "policy": sc.policy.model_copy(update={"selection": selection})})
        self.scenario, self.cfg = sc, cfg
        self.twin = Twin.build(sc)
        self.handler = BudgetHandler(sc, cfg, np.array([e.slots for e in self.twin.experts], float))
        self.action_space = self.handler.action_space
        self.observation_space = self.handler.observation_space
        self.initial_budgets = budgets_of(sc)
        self.sim: EdgeSimulation | None = None
        self.window = 0
        self.done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # independent streams: the load must not depend on the service draws the agent's subsets cause
        arrivals, service, routing = np.random.SeedSequence(int(self.np_random.integers(2**63))).spawn(3)
        rng = np.random.default_rng(service)
        if isinstance(self.twin.policy.router, UniformRouter):
            self.twin.policy.router.rng = np.random.default_rng(routing)
        prompt_ids = self.twin.quality.prompts["prompt_id"].astype(str).to_numpy()
        self.twin.policy.set_budgets(self.initial_budgets)
        self.box = self.handler.action_for(self.initial_budgets)
        self.sim = EdgeSimulation(self.twin.experts, self.twin.policy, prompt_ids, rng)
        self.meter = WindowMeter(self.sim, self.handler.base_latency, self.twin.policy.aggregation_s)
        self.sim.start(self.twin.workload.batches(np.random.default_rng(arrivals), self.cfg.window_s),
                       self.meter.on_batch)
        self.window, self.done = 0, False
        empty = WindowStats.empty(len(self.scenario.categories), len(self.twin.experts), self.cfg.window_s)
        return self.handler.observation(empty, self.box), {
            "energy_budget_J": self.initial_budgets.energy_J, "latency_budget_s": self.initial_budgets.latency_s.copy()}

    def step(self, action):
        if self.done:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        if not self.action_space.contains(np.asarray(action, self.action_space.dtype)
                                          if isinstance(self.action_space, gym.spaces.Box) else action):
            raise ValueError(f"action {action!r} is not in the action space {self.action_space} "
                             "(for a Box, wrap the env with gymnasium.wrappers.ClipAction)")
        box = self.handler.box_action(action)
        budgets = self.handler.budgets(box)
        infeasible = False
        try:
            self.twin.policy.set_budgets(budgets)
            self.box = box
        except InfeasibleBudgets:
            infeasible = True
        t0, t1 = self.window * self.cfg.window_s, (self.window + 1) * self.cfg.window_s
        self.sim.advance(t1)
        stats = self.meter.close_window(t0, t1)
        self.window += 1
        truncated = self.window >= self.cfg.windows
        self.done = truncated
        budgets = self.twin.policy.budgets
        info = {"energy_budget_J": budgets.energy_J, "latency_budget_s": budgets.latency_s.copy(),
                "infeasible": infeasible,
                "subset": [e.name for e, ok in zip(self.twin.experts, self.twin.policy.allowed) if ok],
                "completed": stats.completed, "correct": stats.correct, "late": stats.late,
                "energy_J": stats.energy_J}
        return self.handler.observation(stats, self.box), self.handler.reward(stats), False, truncated, info

    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Per-query and per-leg records of the episode (the simulator's schema), after letting the
        queries still in flight finish."""
        if self.sim is None or not self.done:
            raise RuntimeError("records() is available once an episode has ended")
        self.sim.advance()
        sc = self.scenario
        prompt_ids = self.twin.quality.prompts["prompt_id"].astype(str).to_numpy()
        budgets = budgets_of(sc)
        return query_records(self.sim.result(), [c.name for c in sc.categories], budgets.latency_s,
                             budgets.energy_J, prompt_ids)
