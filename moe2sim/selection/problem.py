"""The coarse-level selection problem, and building it from a scenario.

Worst case per expert n and category m, at the `quantile` of the category's prompt and output
lengths (q = 1 would be the longest prompt in the data, which no budget survives):
    D[n, m] = up_n(bytes(p_q)) + ttft_n(p_q) + o_q / r_decode,n + down_n(bytes(o_q)) + aggregation
    E[n]    = max_m  active energy of (p_q, o_q) on n
Queueing is not part of the worst case (MoE²'s delay model is transmission + compute +
aggregation); the simulator measures it. U(S) is the held-out accuracy on the train split —
never test — of the frozen gate restricted to S (top-min(k,|S|), the scenario's aggregation),
averaged over categories with the scenario mix, with its standard error (selection/estimate.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from moe2sim.routing.aggregation import Outcomes
from moe2sim.scenario import Scenario
from moe2sim.selection.budgets import Budgets
from moe2sim.workload import BYTES_PER_TOKEN, Workload, token_lengths


@dataclass
class SelectionProblem:
    names: list[str]
    categories: list[str]
    delay_s: np.ndarray      # (N, M) worst-case delay of expert n on category m, aggregation included
    energy_J: np.ndarray     # (N,) worst-case active energy of one query on expert n
    k: int
    utility: Callable[[int], float]  # U of a subset given as a bitmask over experts
    upper_bound: Callable[[int], float] | None = None  # ≥ U(T) for every T ⊆ the argument (for solve_exact)
    allowed: int = -1  # bitmask of the experts the selection may choose from (policy.subset); -1: all
    z: float = 1.96    # near_best: a paired difference within z standard errors is no difference
    cache: dict[int, float] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)  # subsets whose U the current solve looked up

    def begin(self) -> float:
        """Start counting a solve's evaluations; returns the start time."""
        self.touched = set()
        return time.perf_counter()

    @property
    def n(self) -> int:
        return len(self.names)

    def U(self, mask: int) -> float:
        self.touched.add(mask)
        if mask not in self.cache:
            self.cache[mask] = self.utility(mask) if mask else 0.0
        return self.cache[mask]

    def energy_of(self, mask: int) -> float:
        e = sorted((self.energy_J[j] for j in members(mask)), reverse=True)
        return float(sum(e[: self.k]))

    def delay_ok(self, budgets: Budgets) -> np.ndarray:
        """Allowed experts whose worst-case delay fits every category's budget."""
        allowed = np.array([bool(self.allowed >> j & 1) for j in range(self.n)])
        return allowed & np.all(self.delay_s <= budgets.latency_s[None, :] + 1e-12, axis=1)

    def delay_of(self, mask: int) -> np.ndarray:
        """(M,) worst-case delay of the subset per category."""
        idx = members(mask)
        return self.delay_s[idx].max(axis=0) if idx else np.zeros(len(self.categories))

    def feasible(self, mask: int, budgets: Budgets) -> bool:
        ok = self.delay_ok(budgets)
        return all(ok[j] for j in members(mask)) and self.energy_of(mask) <= budgets.energy_J + 1e-9


def members(mask: int) -> list[int]:
    return [j for j in range(mask.bit_length()) if mask >> j & 1]


def to_mask(indices) -> int:
    return sum(1 << int(j) for j in indices)



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


def oracle_coverage(outcomes: Outcomes, prompts: np.ndarray, weights: np.ndarray):
    """bound(mask): weighted probability that some member answers right, 1 − Π_{j∈mask}(1 − p_j) —
    ≥ U(T) for every T ⊆ mask (an aggregate can only be right where some chosen answer is)."""
    p = outcomes.p[prompts]

    def bound(mask: int) -> float:
        return float(((1.0 - np.prod(1.0 - p[:, members(mask)], axis=1)) * weights).sum())

    return bound


def selection_problem(scenario: Scenario, profiles: list, workload: Workload, utility, quantile: float,
                      upper_bound=None) -> SelectionProblem:
    """The scenario's problem; the selection chooses inside `policy.subset` when one is given."""
    delay, energy = worst_case(scenario, profiles, workload, quantile)
    names = [e.name for e in scenario.experts]
    allowed = to_mask(names.index(n) for n in scenario.allowed_experts)
    return SelectionProblem(names, [c.name for c in scenario.categories], delay, energy, scenario.policy.k, utility,
                            upper_bound, allowed, scenario.policy.selection.z)


def mix_weights(categories: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """Per-prompt weights: category c's mix share spread evenly over its prompts (categories absent get 0)."""
    counts = np.bincount(categories, minlength=len(mix)).astype(float)
    present = counts > 0
    share = np.where(present, mix / np.where(present, counts, 1), 0.0)
    w = share[categories]
    return w / w.sum()

