"""Assembling the policy from a scenario: router, aggregator, and the coarse-level selector.

The selector's utility U(S) is measured on the validation part of the train split
(traces.validation_mask) with the same router and aggregation the simulation uses.
"""
from __future__ import annotations

import numpy as np

from moe2sim.aggregation import Aggregator, HighestWeight, Oracle, WeightedVote
from moe2sim.embed import load_embeddings
from moe2sim.errors import InputError
from moe2sim.policy import FixedRouter, GateRouter, MixturePolicy, PriorRouter, Router, UniformRouter
from moe2sim.problem import budgets_of, mix_weights, oracle_coverage, selection_problem, validation_utility
from moe2sim.profiles import DeviceProfile
from moe2sim.scenario import Scenario
from moe2sim.selection import InfeasibleBudgets, Selector
from moe2sim.traces import QualityData, load_quality, validation_mask
from moe2sim.workload import QueryBatch, Workload


def load_split(scenario: Scenario, split: str, models: list[str]) -> QualityData:
    return load_quality(scenario.path(scenario.traces.prompts), scenario.path(scenario.traces.quality), models, split)


def category_prior(train: QualityData, scenario: Scenario) -> np.ndarray:
    """prior[c, e]: expert e's train accuracy on category c (all train prompts if the task has none)."""
    correct = train.scores > 0
    prior = np.empty((len(scenario.categories), len(train.experts)))
    for c, cat in enumerate(scenario.categories):
        rows = train.rows_of_task(cat.trace_task)
        prior[c] = correct[rows].mean(axis=0) if len(rows) else correct.mean(axis=0)
    return prior


def prompt_categories(quality: QualityData, scenario: Scenario) -> np.ndarray:
    """Category index of each prompt row (-1 for tasks no category uses)."""
    cats = np.full(len(quality.prompts), -1, np.int64)
    for c, cat in enumerate(scenario.categories):
        cats[quality.rows_of_task(cat.trace_task)] = c
    return cats


def build_aggregator(scenario: Scenario, quality: QualityData) -> Aggregator:
    name = scenario.policy.aggregation
    if name == "weighted_vote":
        options = np.zeros(len(quality.prompts), np.int64)
        for cat in scenario.categories:
            options[quality.rows_of_task(cat.trace_task)] = cat.answer_options or 0
        return WeightedVote.assumed_answers(quality.scores, options, scenario.policy.vote_seed)
    return HighestWeight(quality.scores) if name == "highest_weight" else Oracle(quality.scores)


def build_router(scenario: Scenario, quality: QualityData) -> Router:
    cfg = scenario.policy
    if cfg.name == "fixed_subset":
        names = scenario.allowed_experts
        order = [names.index(e.name) if e.name in names else len(names) for e in scenario.experts]
        return FixedRouter(np.asarray(order, float))
    if cfg.name == "uniform":
        return UniformRouter(len(scenario.experts), scenario.seed)
    if cfg.name == "prior_accuracy":
        return PriorRouter(category_prior(load_split(scenario, "train", list(quality.experts)), scenario))
    from moe2sim.gate import Gate  # torch is imported only when a gate is used

    gate_path = scenario.path(cfg.gate)
    gate = Gate.load(gate_path)
    missing = [m for m in quality.experts if m not in gate.experts]
    if missing:
        raise InputError(scenario.file, "policy.gate", f"{gate_path} was trained without model(s) {missing}")
    ids = quality.prompts["prompt_id"].astype(str).to_numpy()
    x = load_embeddings(scenario.path(scenario.traces.embeddings), ids, gate.dim)
    columns = [gate.experts.index(m) for m in quality.experts]
    return GateRouter(gate.logits(x, quality.prompts["task"].astype(str).to_numpy())[:, columns])


def subset_utility(scenario: Scenario, quality: QualityData, router: Router, aggregator: Aggregator,
                   workload: Workload, rows: np.ndarray | None = None):
    """U(mask) and its oracle upper bound on the given prompt rows of `quality` (default: all rows
    of the scenario's categories), averaged over categories with the scenario mix."""
    cats = prompt_categories(quality, scenario)
    rows = np.flatnonzero(cats >= 0) if rows is None else rows[cats[rows] >= 0]
    if len(rows) == 0:
        raise InputError(scenario.file, "categories", "no prompts of the scenario's categories to evaluate on")
    batch = QueryBatch(arrival_s=np.zeros(len(rows)), category=cats[rows], prompt=rows,
                       prompt_tokens=np.ones(len(rows), np.int64), output_tokens=np.ones(len(rows), np.int64),
                       prompt_bytes=np.ones(len(rows), np.int64))
    weights = mix_weights(cats[rows], workload.mix)
    utility = validation_utility(np.asarray(router.logits(batch)), aggregator, rows, weights, scenario.policy.k)
    return utility, oracle_coverage(quality.scores, rows, weights)


def build_selector(scenario: Scenario, profiles: list[DeviceProfile], workload: Workload,
                   models: list[str]) -> Selector:
    """The selection problem, U measured on the validation part of the train split."""
    train = load_split(scenario, "train", models)
    val = np.flatnonzero(validation_mask(train.prompts["prompt_id"].astype(str).to_numpy()))
    utility, bound = subset_utility(scenario, train, build_router(scenario, train),
                                    build_aggregator(scenario, train), workload, val)
    problem = selection_problem(scenario, profiles, workload, utility, scenario.policy.selection.quantile, bound)
    return Selector(problem, scenario.policy.selection.method, scenario.policy.selection.seed)


def build_policy(scenario: Scenario, quality: QualityData, profiles: list[DeviceProfile],
                 workload: Workload) -> MixturePolicy:
    names = [e.name for e in scenario.experts]
    allowed = np.isin(names, scenario.allowed_experts)
    policy = MixturePolicy(build_router(scenario, quality), allowed, scenario.policy.k,
                           build_aggregator(scenario, quality), scenario.policy.aggregation_s)
    if scenario.policy.selection.method != "none":
        policy.selector = build_selector(scenario, profiles, workload, list(quality.experts))
        try:
            policy.set_budgets(budgets_of(scenario))
        except InfeasibleBudgets as exc:
            raise InputError(scenario.file, "energy_budget_J / latency_budget_s", str(exc)) from None
    return policy
