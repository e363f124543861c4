"""`moe2sim select`: MoE²'s coarse level alone: the subset for a scenario's budgets, with what binds."""
from __future__ import annotations

from typing import Any

from moe2sim.errors import InputError
from moe2sim.scenario import Scenario
from moe2sim.selection.budgets import budgets_of
from moe2sim.selection.solvers import InfeasibleBudgets, binding_constraints
from moe2sim.twin.factory import Inputs, build_selector
from moe2sim.workload import Workload


def select_subset(scenario: Scenario) -> dict[str, Any]:
    """The scenario's selection method at its budgets (`exact` when the scenario's is `none`, as in a
    sweep): subset, U, binding constraints, worst cases."""
    from moe2sim.experiments.sweep import variant

    scenario = variant(scenario, "moe2")
    inputs = Inputs(scenario)
    profiles = inputs.profiles()
    selector = build_selector(inputs, profiles, Workload(scenario, inputs.test))
    budgets, problem = budgets_of(scenario), selector.problem
    try:
        sel = selector.select(budgets)
    except InfeasibleBudgets as exc:
        raise InputError(scenario.file, "budgets", f"no subset meets them: {exc}") from None
    return {
        "subset": sel.subset(problem.names), "U": sel.utility, "method": sel.method,
        "binding": binding_constraints(problem, sel.mask, budgets), "sets_evaluated": sel.evaluated,
        "subsets_total": 2 ** bin(problem.allowed & ((1 << problem.n) - 1)).count("1") - 1,
        "solver_seconds": sel.seconds, "k": problem.k,
        "worst_case_energy_J": problem.energy_of(sel.mask), "energy_budget_J": budgets.energy_J,
        "worst_case_delay_s": dict(zip(problem.categories, problem.delay_of(sel.mask).tolist())),
        "latency_budget_s": dict(zip(problem.categories, budgets.latency_s.tolist())),
    }
