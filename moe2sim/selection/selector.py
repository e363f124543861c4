"""The selector: re-solves the subset whenever the budgets change, with the method's solver."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moe2sim.selection.budgets import Budgets
from moe2sim.selection.problem import SelectionProblem
from moe2sim.selection.solvers import SOLVERS, Selection


@dataclass
class Selector:
    """Re-solves the subset whenever the budgets change; remembers the last answer."""

    problem: SelectionProblem
    method: str
    seed: int = 0
    memo: dict[tuple, Selection] = field(default_factory=dict)

    def select(self, budgets: Budgets) -> Selection:
        """The method's answer for these budgets (remembered: the same budgets give the same subset)."""
        if budgets.key not in self.memo:
            self.memo[budgets.key] = SOLVERS[self.method](self.problem, budgets, np.random.default_rng(self.seed))
        return self.memo[budgets.key]
