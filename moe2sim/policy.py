"""The policy object: which k experts answer a query, with what weights, and how answers combine.

One object serves the simulator, the gym environment and the live runner; it sees
queries (category, prompt) and never the clock. `decide` is vectorised over a batch;
the live runner calls it with batches of one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from moe2sim.workload import QueryBatch


@dataclass(frozen=True)
class Decision:
    """experts[i] are query i's k expert indices, by descending weight; weights[i] sums to 1."""

    experts: np.ndarray  # (n, k) int
    weights: np.ndarray  # (n, k) float


def highest_weight(weights: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Aggregate by returning the answer of the highest-weighted expert (first on ties)."""
    return scores[np.arange(len(scores)), np.argmax(weights, axis=1)]


class Policy(Protocol):
    k: int
    aggregation_s: float

    def decide(self, batch: QueryBatch) -> Decision: ...

    def aggregate(self, decision: Decision, chosen_scores: np.ndarray) -> np.ndarray:
        """Score of the combined answer per query, from the (n, k) scores of the chosen experts."""
        ...


@dataclass
class CategoryTablePolicy:
    """Per category, a fixed choice of k experts and weights (the baseline before the gate).

    prior_accuracy: the k allowed experts with the highest train-split accuracy on the
    category, weighted in proportion to that accuracy; fixed_subset: the first k allowed
    experts in the order given, equal weights.
    """

    table_experts: np.ndarray  # (n_categories, k)
    table_weights: np.ndarray  # (n_categories, k)
    aggregation_s: float

    @property
    def k(self) -> int:
        return self.table_experts.shape[1]

    @classmethod
    def prior_accuracy(cls, prior: np.ndarray, allowed: list[int], k: int,
                       aggregation_s: float) -> "CategoryTablePolicy":
        """prior[c, e]: accuracy of expert e on category c (train split)."""
        allowed_arr = np.asarray(allowed)
        sub = prior[:, allowed_arr]
        order = np.argsort(-sub, axis=1, kind="stable")[:, :k]
        experts = allowed_arr[order]
        acc = np.take_along_axis(sub, order, axis=1) + 1e-9
        return cls(experts, acc / acc.sum(axis=1, keepdims=True), aggregation_s)

    @classmethod
    def fixed_subset(cls, n_categories: int, allowed: list[int], k: int,
                     aggregation_s: float) -> "CategoryTablePolicy":
        experts = np.tile(np.asarray(allowed[:k]), (n_categories, 1))
        return cls(experts, np.full(experts.shape, 1.0 / k), aggregation_s)

    def decide(self, batch: QueryBatch) -> Decision:
        return Decision(self.table_experts[batch.category], self.table_weights[batch.category])

    def aggregate(self, decision: Decision, chosen_scores: np.ndarray) -> np.ndarray:
        return highest_weight(decision.weights, chosen_scores)
