"""The policy object: which k experts answer a query, with what weights, and how answers combine.

MixturePolicy = router (one logit per expert for a prompt) + allowed subset S + k + aggregator.
The fine level of MoE²: top-k of S by logit, softmax weights renormalised over those k. One
object serves the simulator, the gym environment and the live runner; it sees queries
(category, prompt row) and never the clock. `decide` is vectorised over a batch; the live
runner calls it with batches of one. The coarse level (choosing S) calls `set_subset`.

Routers:
- GateRouter: the trained gating network's logits on the prompt's embedding (precomputed once).
- PriorRouter: log of each expert's train accuracy on the query's category, so weights are
  proportional to prior accuracy (the baseline before the gate).
- FixedRouter: the subset's listed order, near-equal weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from moe2sim.aggregation import Aggregator
from moe2sim.selection import Budgets, Selection, Selector, members
from moe2sim.workload import QueryBatch


def topk_in_subset(logits: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k experts of the allowed subset by logit, weights = softmax renormalised over those k.

    Returns experts (n, k) by descending weight and weights (n, k) summing to 1.
    """
    masked = np.where(allowed[None, :], logits, -np.inf)
    top = np.argpartition(-masked, k - 1, axis=1)[:, :k] if k < logits.shape[1] else \
        np.tile(np.arange(logits.shape[1]), (len(logits), 1))
    top_logits = np.take_along_axis(masked, top, axis=1)
    order = np.argsort(-top_logits, axis=1, kind="stable")
    experts = np.take_along_axis(top, order, axis=1)
    z = np.take_along_axis(top_logits, order, axis=1)
    w = np.exp(z - z[:, :1])
    return experts, w / w.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Decision:
    """experts[i] are query i's k expert indices, by descending weight; weights[i] sums to 1."""

    experts: np.ndarray  # (n, k) int
    weights: np.ndarray  # (n, k) float


class Router(Protocol):
    def logits(self, batch: QueryBatch) -> np.ndarray:
        """(n, n_experts) ranking logits for the batch's queries."""
        ...


@dataclass(frozen=True)
class GateRouter:
    prompt_logits: np.ndarray  # (n_prompts, n_experts), gate output per prompt row

    def logits(self, batch: QueryBatch) -> np.ndarray:
        return self.prompt_logits[batch.prompt]


@dataclass(frozen=True)
class PriorRouter:
    prior: np.ndarray  # (n_categories, n_experts) train accuracy

    def logits(self, batch: QueryBatch) -> np.ndarray:
        return np.log(self.prior[batch.category] + 1e-9)


@dataclass(frozen=True)
class FixedRouter:
    order: np.ndarray  # (n_experts,) rank of each expert, 0 first

    def logits(self, batch: QueryBatch) -> np.ndarray:
        return np.broadcast_to(-1e-6 * self.order, (len(batch), len(self.order)))


class UniformRouter:
    """k experts of the subset uniformly at random per query, near-equal weights (no gate)."""

    def __init__(self, n_experts: int, seed: int):
        self.n_experts = n_experts
        self.rng = np.random.default_rng(seed)

    def logits(self, batch: QueryBatch) -> np.ndarray:
        return 1e-6 * self.rng.random((len(batch), self.n_experts))


@dataclass
class MixturePolicy:
    """Top-min(k, |S|) of the allowed subset S; `selector` (if any) re-chooses S when budgets change."""

    router: Router
    allowed: np.ndarray  # (n_experts,) bool: the subset S
    k: int
    aggregator: Aggregator
    aggregation_s: float
    selector: Selector | None = None
    budgets: Budgets | None = None  # the budgets the subset was last chosen for

    def set_subset(self, allowed: np.ndarray) -> None:
        if not allowed.any():
            raise ValueError("the subset is empty")
        self.allowed = allowed.astype(bool)

    def set_budgets(self, budgets: Budgets) -> Selection:
        """The coarse level: re-solve S for new budgets (raises InfeasibleBudgets)."""
        selection = self.selector.select(budgets)
        allowed = np.zeros(len(self.allowed), bool)
        allowed[members(selection.mask)] = True
        self.set_subset(allowed)
        self.budgets = budgets
        return selection

    @property
    def k_effective(self) -> int:
        return min(self.k, int(self.allowed.sum()))

    def decide(self, batch: QueryBatch) -> Decision:
        return Decision(*topk_in_subset(self.router.logits(batch), self.allowed, self.k_effective))

    def aggregate(self, batch: QueryBatch, decision: Decision) -> np.ndarray:
        """Score of the combined answer per query (> 0: correct)."""
        return self.aggregator.combine(batch.prompt, decision.experts, decision.weights)
