"""The policy object: which k experts answer a query, with what weights, and how answers combine.

MixturePolicy = router (one logit per expert per prompt) + selector (the coarse level: subset S for
the budgets) + k + aggregator. Per query: the top-min(k, |S|) experts of S by logit, softmax weights
renormalised over those k; their answers are combined by the aggregator. One object serves the
simulator, the gym environment and the live runner: it sees queries (category, prompt row) and
random streams, never the clock. It is immutable: `with_budgets` returns the policy for other
budgets (re-solving S), `with_subset` and `with_router` the same policy otherwise restricted or routed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moe2sim.routing.aggregation import Aggregator, Outcomes, expected_correct
from moe2sim.routing.routers import Decision, Router, topk_in_subset
from moe2sim.selection.budgets import Budgets
from moe2sim.selection.problem import members
from moe2sim.selection.selector import Selector
from moe2sim.selection.solvers import Selection
from moe2sim.workload import QueryBatch


@dataclass(frozen=True)
class MixturePolicy:
    router: Router
    allowed: np.ndarray  # (n_experts,) bool: the subset S
    k: int
    aggregator: Aggregator
    outcomes: Outcomes                    # P(one answer right) per prompt and expert, by the scoring rule
    aggregation_s: float
    names: tuple[str, ...]
    selector: Selector | None = None
    budgets: Budgets | None = None        # the budgets S was chosen for (None: no selector)
    selection: Selection | None = None    # the selector's answer for them

    def with_budgets(self, budgets: Budgets) -> "MixturePolicy":
        """The coarse level: the policy with S re-solved for new budgets (raises InfeasibleBudgets)."""
        if self.selector is None:
            raise ValueError("this policy has no selector (selection.method: none)")
        return self.with_selection(budgets, self.selector.select(budgets))

    def with_selection(self, budgets: Budgets, selection: Selection) -> "MixturePolicy":
        """The policy with S = a selection already solved for these budgets."""
        allowed = np.zeros(len(self.allowed), bool)
        allowed[members(selection.mask)] = True
        return replace(self.with_subset(allowed), budgets=budgets, selection=selection)

    def with_subset(self, allowed: np.ndarray) -> "MixturePolicy":
        """The policy restricted to another subset S (a bool mask over the experts)."""
        allowed = np.asarray(allowed).astype(bool)
        if not allowed.any():
            raise ValueError("the subset is empty")
        return replace(self, allowed=allowed)

    def with_router(self, router: Router) -> "MixturePolicy":
        return replace(self, router=router)

    @property
    def subset(self) -> list[str]:
        return [n for n, ok in zip(self.names, self.allowed) if ok]

    @property
    def k_effective(self) -> int:
        return min(self.k, int(self.allowed.sum()))

    def predicted_worst(self, categories: np.ndarray) -> tuple[np.ndarray, float]:
        """S's worst-case delay for each query's category and its worst-case energy (NaN without a selector)."""
        if self.selection is None:
            return np.full(len(categories), np.nan), float("nan")
        problem = self.selector.problem
        return problem.delay_of(self.selection.mask)[categories], problem.energy_of(self.selection.mask)

    def decide(self, batch: QueryBatch, rng: np.random.Generator) -> Decision:
        return Decision(*topk_in_subset(self.router.logits(batch, rng), self.allowed, self.k_effective))

    def aggregate(self, batch: QueryBatch, decision: Decision, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Per query: is the combined answer right (each leg's answer drawn right with its probability),
        and the exact probability that it is, given the experts chosen."""
        return self.judge(batch, decision, self.outcomes.draw(batch.prompt, decision.experts, rng))

    def judge(self, batch: QueryBatch, decision: Decision, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`aggregate` with the legs' outcomes given (n, k): whether the combined answer is right, and
        the probability that it is."""
        prompts, experts, weights = batch.prompt, decision.experts, decision.weights
        return (self.aggregator.correct(prompts, experts, weights, right),
                expected_correct(self.aggregator, self.outcomes, prompts, experts, weights))
