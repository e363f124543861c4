"""The subset action space: one action per distinct decision the selector can make, plus "hold".

The selector maps budgets to an expert subset; most budget pairs give one of a few subsets, and some
give none (infeasible). The table enumerates the budgets of a G x G grid (G = env.subset_grid; energy
budget x one latency multiplier for every category, both log-spaced over the env's ranges) and, for a
site with outages, the same grid with the experts that are down or degraded at some time excluded
from the selection (each distinct set once). It keeps the first grid point of each distinct subset
the selector returns (points it refuses are dropped) and orders the subsets by worst-case energy.
Action 0 holds the subset in force; action a ≥ 1 puts row a - 1's selection in force (its subset and
the budgets it was solved for). No action is infeasible, so none is a disguised "hold".
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from moe2sim.selection.budgets import Budgets
from moe2sim.selection.problem import members
from moe2sim.selection.selector import Selector
from moe2sim.selection.solvers import InfeasibleBudgets, Selection

HOLD = 0


@dataclass(frozen=True)
class ActionTable:
    """Row a - 1 is action a: the budgets (and their Box point), the selection solved for them, its subset."""

    boxes: np.ndarray                    # (K, 1 + M) Box points of the budgets
    budgets: tuple[Budgets, ...]
    selections: tuple[Selection, ...]
    subsets: tuple[tuple[str, ...], ...]
    worst_energy_J: np.ndarray           # (K,) the selector's worst-case energy of the subset

    def __len__(self) -> int:
        return len(self.subsets)

    @property
    def n_actions(self) -> int:
        return len(self) + 1

    def rows(self) -> list[dict]:
        """The mapping as plain rows (action, subset, budgets, worst-case energy, U): docs and reports."""
        return [{"action": HOLD, "subset": "hold (keep the subset in force)"}] + [
            {"action": a + 1, "subset": "|".join(s), "energy_budget_J": round(b.energy_J, 1),
             "latency_budget_s": [round(float(t), 3) for t in b.latency_s],
             "worst_energy_J": round(float(e), 1), "utility": round(float(sel.utility), 4)}
            for a, (s, b, e, sel) in enumerate(zip(self.subsets, self.budgets, self.worst_energy_J, self.selections))]


def action_table(selector: Selector, budgets_of_box: Callable[[np.ndarray], Budgets], m: int, grid: int,
                 names: list[str], exclusions: list[int] = ()) -> ActionTable:
    """Enumerate the distinct subsets the selector reaches on the budget grid, with each bitmask of
    `exclusions` (experts a site takes out at some time) removed from the choice in turn."""
    levels = np.linspace(-1.0, 1.0, grid)
    problem = selector.problem
    allowed = problem.allowed if problem.allowed >= 0 else (1 << problem.n) - 1
    found: dict[int, tuple[np.ndarray, Budgets, Selection]] = {}
    for out in dict.fromkeys([0, *exclusions]):
        if not allowed & ~out:
            continue
        restricted = selector if not out else Selector(replace(problem, allowed=allowed & ~out), selector.method,
                                                       selector.seed)
        for e in levels:
            for s in levels:
                box = np.r_[e, np.full(m, s)].astype(np.float32)
                budgets = budgets_of_box(box)
                try:
                    selection = restricted.select(budgets)
                except InfeasibleBudgets:
                    continue
                found.setdefault(selection.mask, (box, budgets, selection))
    if not found:
        raise ValueError("no budgets on the grid are feasible: widen env.energy_budget_J / env.latency_scale")
    masks = sorted(found, key=lambda k: (problem.energy_of(k), -found[k][2].utility))
    return ActionTable(np.array([found[k][0] for k in masks]), tuple(found[k][1] for k in masks),
                       tuple(found[k][2] for k in masks), tuple(tuple(names[j] for j in members(k)) for k in masks),
                       np.array([problem.energy_of(k) for k in masks]))
