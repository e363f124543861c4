"""Budgets: one energy budget per query and a latency budget per category."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moe2sim.scenario import Scenario


@dataclass(frozen=True)
class Budgets:
    energy_J: float
    latency_s: np.ndarray  # (M,) per category

    @property
    def key(self) -> tuple[float, ...]:
        """Hashable identity (the same budgets give the same subset)."""
        return (float(self.energy_J), *np.asarray(self.latency_s, float).tolist())


def budgets_of(scenario: Scenario) -> Budgets:
    """The scenario's own budgets."""
    return Budgets(scenario.energy_budget_J, np.array([c.latency_budget_s for c in scenario.categories]))
