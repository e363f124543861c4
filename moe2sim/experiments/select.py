"""`moe2sim select`: MoE²'s coarse level alone: the subset for a scenario's budgets, with what binds; and the
same account of a built policy's subset for summary.json and the report's set-up rows."""
from __future__ import annotations

from typing import Any

from moe2sim.errors import InputError
from moe2sim.policy import MixturePolicy
from moe2sim.scenario import Scenario
from moe2sim.selection.budgets import budgets_of
from moe2sim.selection.solvers import InfeasibleBudgets, binding_constraints, runners_up
from moe2sim.twin import Twin
from moe2sim.twin.factory import routing_input, selecting


def selection_account(scenario: Scenario, policy: MixturePolicy) -> dict[str, Any]:
    """What the gate routes from and, with a selector, the subset chosen for the policy's budgets: U ± SE and
    where U was measured, and the runners-up with their paired differences to it."""
    account: dict[str, Any] = {"routing": routing_input(scenario)}
    if policy.selection is None:
        return account
    problem, sel = policy.selector.problem, policy.selection
    return {**account, "method": sel.method, "subset": sel.subset(problem.names), "U": sel.utility,
            "U_se": problem.utility.se(sel.mask), "U_source": problem.utility.source,
            "U_prompts": problem.utility.prompts, "z": problem.z,
            "compared": runners_up(problem, policy.budgets, sel.mask)}


def select_subset(scenario: Scenario) -> dict[str, Any]:
    """MoE²'s selection (the scenario's method, `significant` when it has none, as in a sweep) at the scenario's
    budgets: subset, U ± SE and where U was measured, the routing input, binding constraints, worst cases,
    and the runners-up with their paired differences."""
    scenario = selecting(scenario)
    twin = Twin.build(scenario, solve=False)
    budgets, problem = budgets_of(scenario), twin.policy.selector.problem
    try:
        policy = twin.policy.with_budgets(budgets)
    except InfeasibleBudgets as exc:
        raise InputError(scenario.file, "budgets", f"no subset meets them: {exc}") from None
    sel = policy.selection
    return {
        **selection_account(scenario, policy), "k": problem.k,
        "binding": binding_constraints(problem, sel.mask, budgets), "sets_evaluated": sel.evaluated,
        "subsets_total": 2 ** bin(problem.allowed & ((1 << problem.n) - 1)).count("1") - 1,
        "solver_seconds": sel.seconds,
        "worst_case_energy_J": problem.energy_of(sel.mask), "energy_budget_J": budgets.energy_J,
        "worst_case_delay_s": dict(zip(problem.categories, problem.delay_of(sel.mask).tolist())),
        "latency_budget_s": dict(zip(problem.categories, budgets.latency_s.tolist())),
    }
