"""One control window of the environment: what the simulation measured in it (WindowStats) and the
WindowMeter that measures it from the simulation's plans, as it runs.

Finish times and latencies come from moe2sim.sim.records (the same definitions as the records).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moe2sim.sim.engine import EdgeSimulation
from moe2sim.sim.entities import Plan
from moe2sim.sim.records import finish_times, leg_end
from moe2sim.sim.site import DailyProfile


@dataclass
class WindowStats:
    """What the simulation measured in one window."""

    duration_s: float
    start_s: float
    end_s: float               # inf for the drain after the episode's last window
    arrivals: np.ndarray        # (M,)
    queue: np.ndarray           # (N,)
    busy_s: np.ndarray          # (N,) slot-seconds
    latencies: list[np.ndarray]  # per category, of answers completed in the window
    correct: int
    late: int
    completed: int
    energy_J: float             # active energy of the answers completed in the window
    energy_cum_J: float

    @classmethod
    def empty(cls, m: int, n: int, duration_s: float) -> "WindowStats":
        """Before the first window: nothing measured yet."""
        return cls(duration_s, 0.0, 0.0, np.zeros(m), np.zeros(n), np.zeros(n), [np.empty(0)] * m, 0, 0, 0, 0.0, 0.0)


class WindowMeter:
    """Turns the simulation's plans into per-window measurements, incrementally.

    An answer is late when its latency exceeds its category's budget in the scenario (the service
    level the operator promised), never the budgets the agent set: otherwise loosening the budgets
    would hide lateness from the reward. The site's latency target when the query arrived scales it."""

    def __init__(self, sim: EdgeSimulation, latency_budgets_s: np.ndarray, aggregation_s: float,
                 target: DailyProfile | None = None):
        self.sim = sim
        self.latency_budgets_s = latency_budgets_s
        self.target = target if target is not None and (target.values != 1.0).any() else None
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
            end = leg_end(start, plan.ttft_s, plan.decode_s)
            started = ~np.isnan(start)
            overlap = np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0, None)
            busy += np.bincount(plan.experts[started], weights=overlap[started], minlength=n)
            finish = np.where(started.all(axis=1), finish_times(start, plan.ttft_s, plan.decode_s, plan.downlink_s,
                                                                self.aggregation_s), np.inf)
            done = ~counted & (finish < t1)
            if done.any():
                cats = plan.batch.category[done]
                latency = finish[done] - plan.batch.arrival_s[done]
                for c in np.unique(cats):
                    lat[c].append(latency[cats == c])
                correct += int(plan.correct[done].sum())
                budget = self.latency_budgets_s[cats]
                if self.target is not None:
                    budget = budget * self.target.at(plan.batch.arrival_s[done])
                late += int((latency > budget).sum())
                completed += int(done.sum())
                energy += float(plan.energy_J[done].sum())
                counted |= done
            if not (counted.all() and np.nanmax(end) < t1):
                still_open.append((plan, counted))
        self.open = still_open
        self.energy_cum += energy
        stats = WindowStats(
            duration_s=t1 - t0, start_s=t0, end_s=t1, arrivals=self.arrivals.copy(),
            queue=np.array([s.queued for s in self.sim.servers], float), busy_s=busy,
            latencies=[np.concatenate(x) if x else np.empty(0) for x in lat],
            correct=correct, late=late, completed=completed, energy_J=energy, energy_cum_J=self.energy_cum)
        self.arrivals[:] = 0
        return stats
