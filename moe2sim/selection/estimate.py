"""U(S) with its uncertainty, from held-out scored prompts.

a_i(S) is prompt i's expected correctness when the gate is restricted to S (top-min(k, |S|) within S,
the scenario's aggregation, each task's scoring rule: aggregation.expected_correct). With W_c the
scenario mix of category c (renormalised over the categories that have prompts), n_c its prompts and
s_c² the sample variance (ddof 1; 1/4, the largest a [0, 1] value can have, where n_c = 1):
    U(S)           = Σ_c W_c · mean_{i∈c} a_i(S)
    SE(S)²         = Σ_c W_c² · s_c²(a(S)) / n_c
    SE(S − T)²     = Σ_c W_c² · s_c²(a(S) − a(T)) / n_c       paired: both subsets on the same prompts
The SE is the prompt-sampling uncertainty, how far U would move on another draw of prompts from the
same tasks (what a test split is). `se_bound(T)` ≥ SE(S − T) for every S (d_i² ≤ max(a_i, 1 − a_i)²),
so a search may prune before it knows S.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from moe2sim.routing.aggregation import Aggregator, Outcomes, expected_correct
from moe2sim.routing.routers import topk_in_subset
from moe2sim.selection.problem import members


def prompt_correctness(logits: np.ndarray, aggregator: Aggregator, outcomes: Outcomes, prompts: np.ndarray, k: int
                       ) -> Callable[[int], np.ndarray]:
    """a(mask): (n,) expected correctness of top-min(k, |S|) within S on each prompt (rows `prompts` of the
    outcome tables, logits (n, N) theirs)."""
    n = logits.shape[1]

    def correct(mask: int) -> np.ndarray:
        allowed = np.zeros(n, bool)
        allowed[members(mask)] = True
        experts, w = topk_in_subset(logits, allowed, min(k, int(allowed.sum())))
        return expected_correct(aggregator, outcomes, prompts, experts, w)

    return correct


@dataclass
class UtilityEstimate:
    """U(S), SE(S) and paired SE(S − T) as in the module docstring; U(mask) is the point estimate."""

    correct: Callable[[int], np.ndarray]  # a(mask) per prompt
    category: np.ndarray                  # (n,) category index of each prompt
    mix: np.ndarray                       # (M,) scenario mix
    source: str = "held-out prompts"      # what the prompts are (said in summaries)
    cache: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = np.bincount(self.category, minlength=len(self.mix))
        present = counts > 0
        self.groups = [np.flatnonzero(self.category == c) for c in np.flatnonzero(present)]
        self.weights = self.mix[present] / self.mix[present].sum()

    @property
    def prompts(self) -> int:
        return len(self.category)

    def a(self, mask: int) -> np.ndarray:
        if mask not in self.cache:
            self.cache[mask] = self.correct(mask) if mask else np.zeros(len(self.category))
        return self.cache[mask]

    def __call__(self, mask: int) -> float:
        a = self.a(mask)
        return float(sum(w * a[g].mean() for w, g in zip(self.weights, self.groups)))

    def _se(self, values: np.ndarray) -> float:
        var = [values[g].var(ddof=1) if len(g) > 1 else 0.25 for g in self.groups]
        return float(np.sqrt(sum(w * w * v / len(g) for w, v, g in zip(self.weights, var, self.groups))))

    def se(self, mask: int) -> float:
        return self._se(self.a(mask))

    def se_difference(self, mask: int, other: int) -> float:
        """Paired SE of U(mask) − U(other)."""
        return self._se(self.a(mask) - self.a(other))

    def se_bound(self, other: int) -> float:
        """≥ SE(S − other) for every S: Σ_c W_c² · mean_c(max(a, 1 − a)²) / (n_c − 1)."""
        a = self.a(other)
        reach = np.maximum(a, 1 - a) ** 2
        return float(np.sqrt(sum(w * w * (reach[g].mean() / (len(g) - 1) if len(g) > 1 else 0.25 / len(g))
                                 for w, g in zip(self.weights, self.groups))))
