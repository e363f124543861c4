"""Building the coarse-level selection problem from a scenario.

Worst case per expert n and category m, at the `quantile` of the category's prompt and output
lengths (q = 1 would be the longest prompt in the data, which no budget survives):
    D[n, m] = up_n(bytes(p_q)) + ttft_n(p_q) + o_q / r_decode,n + down_n(bytes(o_q)) + aggregation
    E[n]    = max_m  active energy of (p_q, o_q) on n
Queueing is not part of the worst case (MoE²'s delay model is transmission + compute +
aggregation); the simulator measures it. U(S) is the validation accuracy — a part of the train
split, never test — of the frozen gate restricted to S (top-min(k,|S|), the scenario's
aggregation), averaged over categories with the scenario mix.
"""
from __future__ import annotations

import numpy as np

from moe2sim.aggregation import Aggregator
from moe2sim.policy import topk_in_subset
from moe2sim.scenario import Scenario
from moe2sim.selection import Budgets, SelectionProblem, members
from moe2sim.workload import BYTES_PER_TOKEN, Workload, token_lengths


def budgets_of(scenario: Scenario) -> Budgets:
    return Budgets(scenario.energy_budget_J, np.array([c.latency_budget_s for c in scenario.categories]))


def worst_case_shapes(scenario: Scenario, workload: Workload, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """(prompt tokens, output tokens) at the quantile, per category."""
    rng = np.random.default_rng(0)
    prompt, output = [], []
    for c, cat in enumerate(scenario.categories):
        p = workload.trace_tokens[workload.rows[c]] if cat.prompt_tokens == "trace" \
            else token_lengths(cat.prompt_tokens, 20_000, rng)
        prompt.append(np.quantile(p, quantile))
        output.append(np.quantile(token_lengths(cat.output_tokens, 20_000, rng), quantile))
    return np.array(prompt), np.array(output)


def worst_case(scenario: Scenario, twin_profiles: list, workload: Workload, quantile: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """D (N, M) and E (N,) as in the module docstring."""
    p, o = worst_case_shapes(scenario, workload, quantile)
    n, m = len(scenario.experts), len(scenario.categories)
    delay, energy = np.empty((n, m)), np.empty((n, m))
    for i, (ex, prof) in enumerate(zip(scenario.experts, twin_profiles)):
        ttft, dec = prof.ttft_s(p), prof.decode_s(o)
        link = ex.link
        up = p * BYTES_PER_TOKEN * 8 / (link.uplink_Mbps * 1e6) + link.propagation_s
        down = o * BYTES_PER_TOKEN * 8 / (link.downlink_Mbps * 1e6) + link.propagation_s
        delay[i] = up + ttft + dec + down + scenario.policy.aggregation_s
        energy[i] = prof.active_energy_J(ttft, dec)
    return delay, energy.max(axis=1)


def validation_utility(logits: np.ndarray, aggregator: Aggregator, prompts: np.ndarray, weights: np.ndarray,
                       k: int):
    """U(mask): weighted accuracy of top-min(k, |S|) within S on validation prompts.

    logits (n_val, N) of the validation prompts, prompts (n_val,) their rows in the aggregator's
    tables, weights (n_val,) per-prompt weights summing to 1 (the scenario mix spread over each
    category's prompts).
    """
    n = logits.shape[1]

    def utility(mask: int) -> float:
        allowed = np.zeros(n, bool)
        allowed[members(mask)] = True
        experts, w = topk_in_subset(logits, allowed, min(k, int(allowed.sum())))
        return float(((aggregator.combine(prompts, experts, w) > 0) * weights).sum())

    return utility


def oracle_coverage(scores: np.ndarray, prompts: np.ndarray, weights: np.ndarray):
    """bound(mask): weighted fraction of prompts some member answers right — ≥ U(T) for every T ⊆ mask."""
    right = scores[prompts] > 0

    def bound(mask: int) -> float:
        return float((right[:, members(mask)].any(axis=1) * weights).sum())

    return bound


def selection_problem(scenario: Scenario, profiles: list, workload: Workload, utility, quantile: float,
                      upper_bound=None) -> SelectionProblem:
    delay, energy = worst_case(scenario, profiles, workload, quantile)
    return SelectionProblem([e.name for e in scenario.experts], [c.name for c in scenario.categories],
                            delay, energy, scenario.policy.k, utility, upper_bound)


def mix_weights(categories: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """Per-prompt weights: category c's mix share spread evenly over its prompts (categories absent get 0)."""
    counts = np.bincount(categories, minlength=len(mix)).astype(float)
    present = counts > 0
    share = np.where(present, mix / np.where(present, counts, 1), 0.0)
    w = share[categories]
    return w / w.sum()

