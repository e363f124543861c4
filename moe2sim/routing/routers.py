"""Routers: one ranking logit per expert for each query, and the fine level's top-k within a subset.

The fine level of MoE²: for a subset S, the top-k experts of S by logit, with softmax weights
renormalised over those k (experts outside S are masked, never retrained).

- GateRouter: the trained gating network's logits on the prompt's embedding (computed once).
- PriorRouter: log of each expert's train accuracy on the query's category, so the weights are
  proportional to prior accuracy (the baseline before the gate).
- FixedRouter: the subset's listed order, near-equal weights.
- UniformRouter: k experts of the subset uniformly at random per query (no gate), from the
  caller's random stream, so the router holds no random state of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

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

    def take(self, columns: list[int]) -> "Decision":
        """The same queries with only some of their experts (e.g. the legs that answered)."""
        return Decision(self.experts[:, columns], self.weights[:, columns])


class Router(Protocol):
    def logits(self, batch: QueryBatch, rng: np.random.Generator) -> np.ndarray:
        """(n, n_experts) ranking logits for the batch's queries."""
        ...


@dataclass(frozen=True)
class GateRouter:
    prompt_logits: np.ndarray  # (n_prompts, n_experts), gate output per prompt row

    def logits(self, batch: QueryBatch, rng: np.random.Generator) -> np.ndarray:
        return self.prompt_logits[batch.prompt]


@dataclass(frozen=True)
class PriorRouter:
    prior: np.ndarray  # (n_categories, n_experts) train accuracy

    def logits(self, batch: QueryBatch, rng: np.random.Generator) -> np.ndarray:
        return np.log(self.prior[batch.category] + 1e-9)


@dataclass(frozen=True)
class FixedRouter:
    order: np.ndarray  # (n_experts,) rank of each expert, 0 first

    def logits(self, batch: QueryBatch, rng: np.random.Generator) -> np.ndarray:
        return np.broadcast_to(-1e-6 * self.order, (len(batch), len(self.order)))


@dataclass(frozen=True)
class UniformRouter:
    n_experts: int

    def logits(self, batch: QueryBatch, rng: np.random.Generator) -> np.ndarray:
        return 1e-6 * rng.random((len(batch), self.n_experts))
