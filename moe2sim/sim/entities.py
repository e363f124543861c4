"""The simulator's entities, apart from the event loop (moe2sim.sim.engine) and the servers: an expert as
the simulator sees it, a routed batch of queries with its legs' timings (a Plan), and a finished run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from moe2sim.devices.batching_law import DeviceLaw
from moe2sim.devices.service import ServiceModel
from moe2sim.scenario import Link
from moe2sim.selection.budgets import Budgets
from moe2sim.sim.records import Legs, frames
from moe2sim.workload import QueryBatch


@dataclass(frozen=True)
class SimulatedExpert:
    """An expert as the simulator sees it: its name, slots, link, service model and idle power (its share
    of its device's). With a `law`, it runs on the shared device `device` (experts with the same device
    share one); `powers` = its batch-1 (prefill, decode) device power, `ttft` its profile's batch-1 TTFT law.
    Without, its slots are independent."""

    name: str
    slots: int
    link: Link
    service: ServiceModel
    idle_power_W: float
    device: str = ""
    law: DeviceLaw | None = None
    powers: tuple[float, float] = (0.0, 0.0)
    ttft: Callable[[np.ndarray], np.ndarray] | None = None  # batch-1 TTFT law (prompt tokens -> s) on the device


@dataclass
class Plan:
    """A batch of queries with their routing and leg timings; start_s is filled in as legs start."""

    batch: QueryBatch
    experts: np.ndarray        # (n, k)
    weights: np.ndarray        # (n, k)
    score: np.ndarray          # (n,) probability that the combined answer is right, given the experts
    correct: np.ndarray        # (n,) bool: the combined answer was right (seeded draw)
    uplink_s: np.ndarray       # (n, k)
    downlink_s: np.ndarray     # (n, k)
    ttft_s: np.ndarray         # (n, k)
    decode_s: np.ndarray       # (n, k)
    energy_J: np.ndarray       # (n, k) active energy
    subset: str                # the allowed subset S when the batch was routed
    worst_delay_s: np.ndarray  # (n,) predicted worst-case delay of S for the query's category (NaN: no selector)
    worst_energy_J: float      # predicted worst-case energy of S (NaN: no selector)
    budgets: Budgets | None    # budgets in force when routed (None: the scenario's)
    first_id: int              # query_id of the batch's first query
    start_s: np.ndarray = field(init=False)
    service_s: list[list[float]] = field(init=False)

    def __post_init__(self) -> None:
        self.start_s = np.full(self.experts.shape, np.nan)
        self.service_s = (self.ttft_s + self.decode_s).tolist()

    def legs(self, prompt_ids: np.ndarray, latency_budget_s: np.ndarray, energy_budget_J: float) -> Legs:
        """The plan as record inputs; budgets are those in force when routed, else the given ones."""
        b, n = self.batch, len(self.batch)
        if self.budgets is not None:
            latency_budget_s, energy_budget_J = self.budgets.latency_s, self.budgets.energy_J
        return Legs(
            query_id=np.arange(self.first_id, self.first_id + n), category=b.category, prompt_id=prompt_ids[b.prompt],
            arrival_s=b.arrival_s, prompt_tokens=b.prompt_tokens, output_tokens=b.output_tokens,
            experts=self.experts, weights=self.weights, score=self.score, correct=self.correct,
            energy_J=self.energy_J,
            uplink_s=self.uplink_s, queue_s=self.start_s - b.arrival_s[:, None] - self.uplink_s, ttft_s=self.ttft_s,
            decode_s=self.decode_s, downlink_s=self.downlink_s, start_s=self.start_s,
            latency_budget_s=latency_budget_s[b.category], energy_budget_J=np.full(n, energy_budget_J),
            subset=np.repeat(self.subset, n), predicted_worst_delay_s=self.worst_delay_s,
            predicted_worst_energy_J=np.full(n, self.worst_energy_J))


@dataclass
class SimResult:
    plans: list[Plan]
    experts: list[SimulatedExpert]
    run_s: float
    aggregation_s: float

    def records(self, prompt_ids: np.ndarray, categories: list[str], latency_budget_s: np.ndarray,
                energy_budget_J: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Per-query and per-leg tables (moe2sim.sim.records) of a finished simulation."""
        names = [e.name for e in self.experts]
        blocks = [p.legs(prompt_ids, latency_budget_s, energy_budget_J).tables(names, self.aggregation_s)
                  for p in self.plans]
        return frames(blocks, categories, names)
