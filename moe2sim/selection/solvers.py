"""The coarse level of MoE²: choose the expert subset S that maximises U(S) within the budgets.

    maximise U(S)  s.t.  max_{n∈S} D[n, m] ≤ T̄_m  for every category m     (worst-case delay)
                         Σ (k largest E[n], n ∈ S) ≤ Ē                      (worst-case energy)

D and E are worst-case per-expert figures (problem.py builds them from a scenario); U is the
held-out quality of the frozen gate restricted to S, an estimate with a standard error
(estimate.py).

The default rule, `significant`, does not chase that estimate's noise: with Ŝ the exact optimum of
U, b the best feasible single expert and SE the paired standard error of a difference in U,
    S qualifies  ⇔  U(S) − U(b) > z·SE(S − b)      (a mixture must beat the single expert)
                    and U(Ŝ) − U(S) ≤ z·SE(Ŝ − S)   (and be as good as the optimum, as far as U can tell)
and the choice is the qualifying S with the highest U (`near_best`: the least worst-case energy), or
b when none qualifies (z = 1.96 by default, `policy.selection.z`). Every qualifying S lies above
U(Ŝ) − z·se_bound(Ŝ), so a search pruned by the oracle bound at that threshold (subsets_above) is exact;
`*_exhaustive` apply the same rule to every feasible subset. The paper's rule on the point estimate
is `exact` (or `monotone`, MoE²'s own search). Both constraint functions only grow
with S, so feasible sets are closed under taking subsets; when U is non-decreasing too, the
best-first branch and bound below is exact:

- a node is (S, i): S decided-in, experts before position i decided; its candidates are the
  experts j ≥ i with S ∪ {j} feasible; every completion lies inside S ∪ candidates, so
  U(S ∪ candidates) bounds the node (monotonicity);
- if S ∪ candidates is itself feasible it is the node's best completion: evaluate, no branching;
- otherwise branch on the first candidate (in / out); nodes whose bound cannot beat the
  incumbent are pruned, and the search stops when the best open bound cannot.

Measured U need not be monotone (it is not, on the bundled data). Then U(S ∪ candidates) is no
bound and the search can prune the optimum. Two repairs: `monotone` descends from its answer
(drop an expert while that raises U); `exact` runs the same search with a bound that holds for
any U — the oracle accuracy of the set (a mixture can only be right where some member is), which
only grows with the set — and takes every visited S as a candidate: always the exhaustive
optimum, at the price of more evaluations. How often `monotone` loses, and how much, on the real
problem: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from moe2sim.selection.budgets import Budgets
from moe2sim.selection.estimate import UtilityEstimate
from moe2sim.selection.problem import SelectionProblem, members, to_mask


class InfeasibleBudgets(ValueError):
    """No expert fits the budgets on its own; the message says which constraint."""


@dataclass(frozen=True)
class Selection:
    mask: int
    utility: float
    evaluated: int     # distinct subsets whose U the solve needed
    seconds: float
    method: str

    def subset(self, names: list[str]) -> list[str]:
        return [names[j] for j in members(self.mask)]


def check_feasible(problem: SelectionProblem, budgets: Budgets) -> np.ndarray:
    """Experts that fit alone; raises InfeasibleBudgets naming the constraint when none does."""
    delay_ok = problem.delay_ok(budgets)
    energy_ok = problem.energy_J <= budgets.energy_J + 1e-9
    alone = delay_ok & energy_ok
    if alone.any():
        return alone
    reasons = []
    for m, cat in enumerate(problem.categories):
        best = problem.delay_s[:, m].min()
        if best > budgets.latency_s[m]:
            reasons.append(f"latency budget of '{cat}' ({budgets.latency_s[m]:.3g} s) is below every expert's "
                           f"worst-case delay (fastest {best:.3g} s)")
    if not energy_ok.any():
        reasons.append(f"energy budget ({budgets.energy_J:.3g} J) is below every expert's worst-case energy "
                       f"(cheapest {problem.energy_J.min():.3g} J)")
    if not reasons and not delay_ok.any():
        reasons.append("no single expert meets every category's latency budget at once")
    if not reasons:
        reasons.append("every expert that meets the latency budgets exceeds the energy budget, and vice versa")
    raise InfeasibleBudgets("; ".join(reasons))


def feasible_subsets(problem: SelectionProblem, budgets: Budgets) -> Iterator[int]:
    """Every feasible non-empty subset of the experts that fit alone (the exhaustive references' space)."""
    alone = np.flatnonzero(check_feasible(problem, budgets))
    for r in range(1, 1 << len(alone)):
        mask = to_mask(alone[j] for j in range(len(alone)) if r >> j & 1)
        if problem.energy_of(mask) <= budgets.energy_J + 1e-9:
            yield mask


def solve_exhaustive(problem: SelectionProblem, budgets: Budgets) -> Selection:
    """Reference: U of every feasible non-empty subset of the experts that fit alone."""
    start = problem.begin()
    best_mask, best_u = 0, -np.inf
    for mask in feasible_subsets(problem, budgets):
        u = problem.U(mask)
        if u > best_u + 1e-12 or (abs(u - best_u) <= 1e-12 and mask.bit_count() < best_mask.bit_count()):
            best_mask, best_u = mask, u
    return Selection(best_mask, best_u, len(problem.touched), time.perf_counter() - start, "exhaustive")


def solve_monotone(problem: SelectionProblem, budgets: Budgets, repair: bool = True,
                   bound: Callable[[int], float] | None = None, method: str = "monotone") -> Selection:
    """Best-first branch and bound over the subset lattice.

    bound=None uses U itself as the bound and takes a feasible S ∪ candidates as its node's best
    completion: exact when U is non-decreasing (MoE²'s assumption). With a `bound` that is a valid
    upper bound of U on every subset of its argument (e.g. the oracle accuracy of the set), every
    node's own S is a candidate and nothing is assumed of U: exact for any U.
    """
    start = problem.begin()
    alone = np.flatnonzero(check_feasible(problem, budgets))
    # Branch on the most energy-hungry experts first: once k are in, every cheaper candidate
    # fits, S ∪ candidates is feasible and the node closes (fewer nodes when energy binds).
    order = sorted(alone, key=lambda j: -problem.energy_J[j])
    energy, cap, k = problem.energy_J, budgets.energy_J + 1e-9, problem.k
    assume_monotone = bound is None
    bound = bound or problem.U

    def fits(top: list[float], j: int) -> bool:
        return _fits(top, energy[j], k, cap)

    best_mask, best_u = 0, -np.inf
    counter = 0
    heap: list[tuple[float, int, int, list[float], int]] = []

    def push(mask: int, top: list[float], i: int) -> None:
        nonlocal best_mask, best_u, counter
        if mask and problem.U(mask) > best_u + 1e-12:
            best_mask, best_u = mask, problem.U(mask)
        cand = [j for j in order[i:] if fits(top, j)]
        if not cand:
            return
        full = mask | to_mask(cand)
        upper = bound(full)
        if upper <= best_u + 1e-12:
            return
        if assume_monotone and problem.energy_of(full) <= cap:
            best_mask, best_u = full, upper
            return
        counter += 1
        heapq.heappush(heap, (-upper, counter, mask, top, order.index(cand[0])))

    push(0, [], 0)
    while heap:
        neg_bound, _, mask, top, pos = heapq.heappop(heap)
        if -neg_bound <= best_u + 1e-12:
            break
        j = order[pos]
        push(mask | 1 << int(j), _top(top, energy[j], k), pos + 1)
        push(mask, top, pos + 1)
    if repair and assume_monotone:
        best_mask, best_u = _descend(problem, best_mask, best_u)
    return Selection(best_mask, best_u, len(problem.touched), time.perf_counter() - start, method)


def _fits(top: list[float], e: float, k: int, cap: float) -> bool:
    """Does an expert of energy e keep the k largest energies (top) within the cap?"""
    return sum(sorted(top + [e], reverse=True)[:k]) <= cap


def _top(top: list[float], e: float, k: int) -> list[float]:
    return sorted(top + [e], reverse=True)[:k]


def subsets_above(problem: SelectionProblem, budgets: Budgets, threshold: float) -> set[int]:
    """Every feasible subset with U ≥ threshold: depth-first over the experts that fit alone (most
    energy-hungry first), a branch pruned when the problem's upper bound of its largest completion is
    below the threshold (valid for any U, so nothing above the threshold is missed)."""
    alone = np.flatnonzero(check_feasible(problem, budgets))
    order = sorted(alone, key=lambda j: -problem.energy_J[j])
    energy, cap, k = problem.energy_J, budgets.energy_J + 1e-9, problem.k
    found: set[int] = set()

    def visit(mask: int, top: list[float], i: int) -> None:
        if mask and problem.U(mask) >= threshold - 1e-12:
            found.add(mask)
        cand = [j for j in order[i:] if _fits(top, energy[j], k, cap)]
        if not cand or problem.upper_bound(mask | to_mask(cand)) < threshold - 1e-12:
            return
        pos = order.index(cand[0])
        visit(mask | 1 << int(cand[0]), _top(top, energy[cand[0]], k), pos + 1)
        visit(mask, top, pos + 1)

    visit(0, [], 0)
    return found


# How the uncertainty-aware rules choose among the subsets that qualify (see `choose`).
PREFERENCES: dict[str, Callable[[SelectionProblem, int], tuple]] = {
    "significant": lambda p, m: (-p.U(m), m.bit_count()),                      # the highest U, then fewer experts
    "near_best": lambda p, m: (p.energy_of(m), m.bit_count(), -p.U(m)),       # the cheapest worst-case energy
}


def choose(problem: SelectionProblem, candidates: Iterable[int], best: int, single: int, rule: str) -> int:
    """The uncertainty-aware choice, given the point-estimate optimum `best` and the best feasible single
    expert `single`; with d(A, B) = U(A) − U(B) and SE its paired standard error, S qualifies if
    - it beats the single expert: d(S, single) > z · SE(S − single) (a mixture must earn its place), and
    - the optimum does not beat it: d(best, S) ≤ z · SE(best − S);
    of those, the rule's preference (PREFERENCES); `single` when none qualifies."""
    estimate, z = problem.utility, problem.z

    def beats(a: int, b: int) -> bool:
        return problem.U(a) - problem.U(b) > z * estimate.se_difference(a, b) + 1e-12

    qualified = [m for m in candidates if beats(m, single) and not beats(best, m)]
    return min(qualified, key=lambda m: PREFERENCES[rule](problem, m), default=single)


def solve_uncertain(problem: SelectionProblem, budgets: Budgets, rule: str, exhaustive: bool = False) -> Selection:
    """An uncertainty-aware rule (`choose`): the exact optimum Ŝ of the point estimate (solve_exact) and the best
    single expert, then `choose` over the feasible subsets that can be within z standard errors of Ŝ
    (subsets_above at U(Ŝ) − z · se_bound(Ŝ), a bound on every paired SE, so the pruned search misses
    none). `exhaustive`: the reference, the same rule over every feasible subset."""
    if not isinstance(problem.utility, UtilityEstimate):
        raise ValueError(f"{rule} needs a UtilityEstimate (U with its standard errors)")
    start = problem.begin()
    if exhaustive:
        best, candidates = solve_exhaustive(problem, budgets).mask, list(feasible_subsets(problem, budgets))
    else:
        best = solve_exact(problem, budgets).mask
        candidates = subsets_above(problem, budgets, problem.U(best) - problem.z * problem.utility.se_bound(best))
    mask = choose(problem, candidates, best, _best_single(problem, budgets), rule)
    return Selection(mask, problem.U(mask), len(problem.touched), time.perf_counter() - start,
                     rule + ("_exhaustive" if exhaustive else ""))


def runners_up(problem: SelectionProblem, budgets: Budgets, chosen: int, count: int = 3) -> list[dict]:
    """The chosen subset beside the point-estimate optimum, the best single expert and the `count` next-best
    feasible subsets: U ± SE, and the paired difference to the chosen subset ± its SE (needs a UtilityEstimate)."""
    estimate = problem.utility
    best, single = solve_exact(problem, budgets).mask, _best_single(problem, budgets)
    near = subsets_above(problem, budgets, problem.U(best) - problem.z * estimate.se_bound(best))
    others = sorted(near - {chosen, best, single}, key=lambda m: -problem.U(m))[:count]
    roles = {chosen: "chosen", best: "optimum of the point estimate", single: "best single expert"}
    rows = []
    for mask in dict.fromkeys([chosen, best, single, *others]):
        rows.append({"subset": [problem.names[j] for j in members(mask)], "role": roles.get(mask, "runner-up"),
                     "U": problem.U(mask), "U_se": estimate.se(mask),
                     "U_minus_chosen": problem.U(mask) - problem.U(chosen),
                     "U_minus_chosen_se": estimate.se_difference(mask, chosen),
                     "worst_case_energy_J": problem.energy_of(mask)})
    return rows


def solve_exact(problem: SelectionProblem, budgets: Budgets) -> Selection:
    """Branch and bound with the problem's valid upper bound (exact for non-monotone U too)."""
    if problem.upper_bound is None:
        raise ValueError("solve_exact needs problem.upper_bound")
    return solve_monotone(problem, budgets, bound=problem.upper_bound, method="exact")


def _descend(problem: SelectionProblem, mask: int, u: float) -> tuple[int, float]:
    """Drop single experts while that raises U (a no-op when U is monotone)."""
    improved = True
    while improved and mask.bit_count() > 1:
        improved = False
        for j in members(mask):
            smaller = mask & ~(1 << j)
            if problem.U(smaller) > u + 1e-12:
                mask, u, improved = smaller, problem.U(smaller), True
                break
    return mask, u


def binding_constraints(problem: SelectionProblem, mask: int, budgets: Budgets) -> list[str]:
    """The constraints that keep each unselected expert out (empty when every expert is in)."""
    blocking: dict[str, None] = {}
    for j in range(problem.n):
        if mask >> j & 1 or not problem.allowed >> j & 1:
            continue
        for m, cat in enumerate(problem.categories):
            if problem.delay_s[j, m] > budgets.latency_s[m] + 1e-12:
                blocking[f"latency[{cat}]"] = None
        if problem.energy_of(mask | 1 << j) > budgets.energy_J + 1e-9:
            blocking["energy"] = None
    return list(blocking)


def solve_best_single(problem: SelectionProblem, budgets: Budgets, rng: np.random.Generator) -> Selection:
    """Baseline: the one feasible expert with the highest U."""
    start = problem.begin()
    best = _best_single(problem, budgets)
    return Selection(best, problem.U(best), len(problem.touched), time.perf_counter() - start, "best_single")


def _best_single(problem: SelectionProblem, budgets: Budgets) -> int:
    """The mask of the feasible expert with the highest U."""
    alone = np.flatnonzero(check_feasible(problem, budgets))
    return 1 << int(max(alone, key=lambda j: problem.U(1 << int(j))))


def _grow(problem: SelectionProblem, budgets: Budgets, order: list[int], method: str, start: float) -> Selection:
    mask = 0
    for j in order:
        if problem.feasible(mask | 1 << int(j), budgets):
            mask |= 1 << int(j)
    return Selection(mask, problem.U(mask), len(problem.touched), time.perf_counter() - start, method)


def solve_greedy_energy(problem: SelectionProblem, budgets: Budgets, rng: np.random.Generator) -> Selection:
    """Baseline: add experts by U({n}) / E[n], best first, while the budgets hold."""
    start = problem.begin()
    alone = np.flatnonzero(check_feasible(problem, budgets))
    order = sorted(alone, key=lambda j: -problem.U(1 << int(j)) / max(problem.energy_J[j], 1e-9))
    return _grow(problem, budgets, order, "greedy_energy", start)


def solve_random(problem: SelectionProblem, budgets: Budgets, rng: np.random.Generator) -> Selection:
    """Baseline: add the feasible experts in a random order while the budgets hold (a random maximal set)."""
    start = problem.begin()
    alone = np.flatnonzero(check_feasible(problem, budgets))
    return _grow(problem, budgets, list(rng.permutation(alone)), "random", start)


def solve_all_fit(problem: SelectionProblem, budgets: Budgets, rng: np.random.Generator) -> Selection:
    """Baseline: every expert that fits the budgets on its own, jointly feasible or not."""
    start = problem.begin()
    mask = to_mask(np.flatnonzero(check_feasible(problem, budgets)))
    return Selection(mask, problem.U(mask), len(problem.touched), time.perf_counter() - start, "all_fit")


SOLVERS: dict[str, Callable[[SelectionProblem, Budgets, np.random.Generator], Selection]] = {
    **{rule + tail: (lambda p, b, rng, rule=rule, exhaustive=bool(tail): solve_uncertain(p, b, rule, exhaustive))
       for rule in PREFERENCES for tail in ("", "_exhaustive")},
    "monotone": lambda p, b, rng: solve_monotone(p, b),
    "exact": lambda p, b, rng: solve_exact(p, b),
    "exhaustive": lambda p, b, rng: solve_exhaustive(p, b),
    "best_single": solve_best_single,
    "greedy_energy": solve_greedy_energy,
    "random": solve_random,
    "all_fit": solve_all_fit,
}
