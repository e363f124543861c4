"""The one factory: a scenario -> experts, workload and policy (router, aggregator, selector).

Data is read once per build: the prompt and quality tables, each split, the gate checkpoint and its
logits. The selector's utility U(S) is measured on the validation part of the train split
(data.quality.validation_mask) with the same router and aggregation the simulation uses.
Routers and aggregators are picked from registries keyed by the scenario's names.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import ValidationError

from moe2sim.data.bundled import bundled_path
from moe2sim.data.embeddings import load_embeddings
from moe2sim.data.leakage import read_leakage, without_leaks
from moe2sim.data.quality import QualityData, QualityTables, validation_mask
from moe2sim.devices.profiles import DeviceProfile, Sourced, load_profile
from moe2sim.devices.service import NoisyService, ProfileService, ServiceModel, TraceReplayService
from moe2sim.devices.batching_law import DeviceLaw
from moe2sim.errors import InputError
from moe2sim.policy import MixturePolicy
from moe2sim.routing.crossfit import CrossFit
from moe2sim.routing.aggregation import Aggregator, HighestWeight, Oracle, Outcomes, WeightedVote
from moe2sim.routing.routers import FixedRouter, GateRouter, PriorRouter, Router, UniformRouter
from moe2sim.scenario import Scenario, SelectionMethod, SweepMethod
from moe2sim.selection.budgets import budgets_of
from moe2sim.selection.estimate import UtilityEstimate, prompt_correctness
from moe2sim.selection.problem import mix_weights, oracle_coverage, selection_problem
from moe2sim.selection.selector import Selector
from moe2sim.selection.solvers import InfeasibleBudgets
from moe2sim.sim.entities import SimulatedExpert
from moe2sim.workload import QueryBatch, Workload


def profile_path(scenario: Scenario, ref: str) -> Path:
    """A profile is a YAML path, or a name looked up in data_dir/profiles, then in the bundled profiles."""
    if ref.endswith((".yaml", ".yml")):
        return scenario.path(ref)
    own = scenario.path(f"profiles/{ref}.yaml")
    return own if own.is_file() else bundled_path(f"traces/profiles/{ref}.yaml")


@dataclass
class Inputs:
    """A scenario's data, each piece read at most once per build."""

    scenario: Scenario

    @cached_property
    def models(self) -> list[str]:
        return [e.model for e in self.scenario.experts]

    @cached_property
    def tables(self) -> QualityTables:
        sc = self.scenario
        return QualityTables.read(sc.path(sc.traces.prompts), sc.path(sc.traces.quality))

    @cached_property
    def test(self) -> QualityData:
        return self.tables.split(self.models, self.scenario.traces.split)

    @cached_property
    def train(self) -> QualityData:
        return self.tables.split(self.models, "train")

    @cached_property
    def gate(self):
        from moe2sim.routing.gate import Gate  # torch is imported only when a gate is used

        path = self.scenario.path(self.scenario.policy.gate)
        gate = Gate.load(path)
        missing = [m for m in self.models if m not in gate.experts]
        if missing:
            raise InputError(self.scenario.file, "policy.gate", f"{path} was trained without model(s) {missing}")
        return gate

    def split(self, name: str) -> QualityData:
        return self.train if name == "train" else self.test

    def profiles(self) -> list[DeviceProfile]:
        profiles = []
        for i, ex in enumerate(self.scenario.experts):
            path = profile_path(self.scenario, ex.profile)
            if not path.is_file():
                raise InputError(self.scenario.file, f"experts.{i}.profile",
                                 f"unknown device profile '{ex.profile}' (no file {path})")
            profiles.append(with_idle(load_profile(path), ex.idle_power_W, self.scenario.file, i))
        return profiles


def with_idle(profile: DeviceProfile, idle_W: float | None, file: Path, i: int) -> DeviceProfile:
    """The profile on a device whose idle power was measured afresh (`experts.i.idle_power_W`): idle drift
    moves the device's baseline, so the phase powers move by the same amount and the active powers above idle
    (what the model draws) stay as profiled."""
    if idle_W is None:
        return profile
    shift = idle_W - profile.idle_power_W.value
    field = f"experts.{i}.idle_power_W"
    how = f"given by the scenario {file.name} ({field}) in place of the profile's {profile.idle_power_W.value:g} W"
    update = {"idle_power_W": Sourced(value=idle_W, provenance="measured", source=how).model_dump()}
    for phase in ("prefill_power_W", "decode_power_W"):
        old = getattr(profile, phase)
        update[phase] = {"value": old.value + shift, "provenance": "derived",
                         "source": f"{old.value:g} W ({old.provenance}: {old.source}) {shift:+g} W of idle drift ({how})"}
    try:
        return DeviceProfile.model_validate(profile.model_dump() | update)
    except ValidationError as exc:
        raise InputError(file, field, exc.errors()[0]["msg"]) from None


def outcomes_of(quality: QualityData) -> Outcomes:
    """P(one answer right) per prompt and expert, under each task's scoring rule."""
    return Outcomes.of(quality.scores, quality.expected)


def category_prior(train: QualityData, scenario: Scenario) -> np.ndarray:
    """prior[c, e]: expert e's train accuracy on category c (all train prompts if the task has none)."""
    correct = outcomes_of(train).p
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


def routing_input(scenario: Scenario) -> str:
    """What the gate routes from: the prompt alone (default) or the prompt and its task label."""
    return "prompt and task label" if scenario.policy.task_label else "prompt alone"


def _gate_router(inputs: Inputs, quality: QualityData) -> Router:
    """The gate's logits from the prompt's embedding; the task label is read only with `policy.task_label`."""
    gate = inputs.gate
    x = load_embeddings(inputs.scenario.path(inputs.scenario.traces.embeddings), quality.prompt_ids, gate.dim)
    columns = [gate.experts.index(m) for m in quality.experts]
    tasks = quality.tasks if inputs.scenario.policy.task_label else None
    return GateRouter(gate.logits(x, tasks)[:, columns])


def _fixed_router(inputs: Inputs, quality: QualityData) -> Router:
    sc = inputs.scenario
    names = sc.allowed_experts
    return FixedRouter(np.asarray([names.index(e.name) if e.name in names else len(names) for e in sc.experts], float))


ROUTERS: dict[str, Callable[[Inputs, QualityData], Router]] = {
    "gate": _gate_router,
    "prior_accuracy": lambda inputs, quality: PriorRouter(category_prior(inputs.train, inputs.scenario)),
    "fixed_subset": _fixed_router,
    "uniform": lambda inputs, quality: UniformRouter(len(inputs.scenario.experts)),
}


def _weighted_vote(scenario: Scenario, quality: QualityData) -> Aggregator:
    """Option counts from the data, overridden by a category's `answer_options`."""
    declared = {c.trace_task: c.answer_options for c in scenario.categories if c.answer_options is not None}
    return WeightedVote.assumed_answers(len(quality.experts), quality.options(declared), scenario.policy.vote_seed)


AGGREGATORS: dict[str, Callable[[Scenario, QualityData], Aggregator]] = {
    "weighted_vote": _weighted_vote,
    "highest_weight": lambda scenario, quality: HighestWeight(),
    "oracle": lambda scenario, quality: Oracle(),
}


def moe2_selection(scenario: Scenario) -> SelectionMethod:
    """MoE²'s coarse level: the scenario's selection method, `significant` where it names none."""
    method = scenario.policy.selection.method
    return "significant" if method == "none" else method


def selecting(scenario: Scenario, method: SweepMethod = "moe2") -> Scenario:
    """The scenario as `method` chooses its subset: MoE² (and the uniform vote over MoE²'s subset) with
    moe2_selection, a selection baseline with its own method."""
    selection = moe2_selection(scenario) if method in ("moe2", "uniform_vote") else method
    policy = scenario.policy.model_copy(update={
        "selection": scenario.policy.selection.model_copy(update={"method": selection})})
    return scenario.model_copy(update={"policy": policy})


def build_router(inputs: Inputs, quality: QualityData) -> Router:
    return ROUTERS[inputs.scenario.policy.name](inputs, quality)


def build_aggregator(scenario: Scenario, quality: QualityData) -> Aggregator:
    return AGGREGATORS[scenario.policy.aggregation](scenario, quality)


def subset_utility(scenario: Scenario, quality: QualityData, router: Router, aggregator: Aggregator,
                   workload: Workload, rows: np.ndarray | None = None, source: str = "test split",
                   outcomes: Outcomes | None = None) -> tuple[UtilityEstimate, Callable[[int], float]]:
    """U(S) with its SE and U's oracle upper bound on the given prompt rows of `quality` (default: all rows of
    the scenario's categories), averaged over categories with the scenario mix; `outcomes` default: the
    measured ones."""
    cats = prompt_categories(quality, scenario)
    rows = np.flatnonzero(cats >= 0) if rows is None else rows[cats[rows] >= 0]
    if len(rows) == 0:
        raise InputError(scenario.file, "categories", "no prompts of the scenario's categories to evaluate on")
    ones = np.ones(len(rows), np.int64)
    batch = QueryBatch(arrival_s=np.zeros(len(rows)), category=cats[rows], prompt=rows,
                       prompt_tokens=ones, output_tokens=ones, prompt_bytes=ones)
    logits = np.asarray(router.logits(batch, np.random.default_rng(scenario.seed)))
    outcomes = outcomes_of(quality) if outcomes is None else outcomes
    correct = prompt_correctness(logits, aggregator, outcomes, rows, scenario.policy.k)
    estimate = UtilityEstimate(correct, cats[rows], np.asarray(workload.mix, float), source)
    return estimate, oracle_coverage(outcomes, rows, mix_weights(cats[rows], workload.mix))


def held_out_router(inputs: Inputs, train: QualityData) -> tuple[Router, np.ndarray, str]:
    """The router U(S) is measured with, the train rows it is measured on, and what they are: the gate's
    cross-fitted logits on every train prompt (policy.cross_fit), else the scenario's router on the
    validation part of the train split."""
    sc = inputs.scenario
    if sc.policy.name == "gate" and sc.policy.cross_fit is not None:
        path = sc.path(sc.policy.cross_fit)
        logits = CrossFit.load(path).rows(path, train.prompt_ids, list(train.experts), sc.policy.task_label)
        return GateRouter(logits), np.arange(len(train.prompts)), "train split, cross-fitted"
    val = np.flatnonzero(validation_mask(train.prompt_ids))
    return build_router(inputs, train), val, "validation part of the train split"


def train_outcomes(inputs: Inputs) -> Outcomes:
    """P(right) on the train split, each declared leak corrected (data/leakage.py; traces.leakage)."""
    sc, train = inputs.scenario, inputs.train
    measured = outcomes_of(train)
    if sc.traces.leakage is None:
        return measured
    return Outcomes(without_leaks(measured.p, train.tasks, list(train.experts), read_leakage(sc.path(sc.traces.leakage))))


def build_selector(inputs: Inputs, profiles: list[DeviceProfile], workload: Workload) -> Selector:
    """The selection problem, U(S) measured on held-out train prompts (held_out_router), leaks corrected."""
    sc = inputs.scenario
    train = inputs.train
    router, rows, source = held_out_router(inputs, train)
    source += "" if sc.traces.leakage is None else f", declared leaks corrected ({sc.traces.leakage})"
    utility, bound = subset_utility(sc, train, router, build_aggregator(sc, train), workload, rows, source,
                                    train_outcomes(inputs))
    problem = selection_problem(sc, profiles, workload, utility, sc.policy.selection.quantile, bound)
    return Selector(problem, sc.policy.selection.method, sc.policy.selection.seed)


def build_policy(inputs: Inputs, profiles: list[DeviceProfile], workload: Workload, solve: bool = True
                 ) -> MixturePolicy:
    """The scenario's policy; with a selector, S solved for the scenario's budgets (an error naming them if no
    subset meets them), or left to the caller's `with_budgets` when not `solve` (a sweep's other budgets)."""
    sc = inputs.scenario
    names = tuple(e.name for e in sc.experts)
    selector = None if sc.policy.selection.method == "none" else build_selector(inputs, profiles, workload)
    policy = MixturePolicy(build_router(inputs, inputs.test), np.isin(names, sc.allowed_experts), sc.policy.k,
                           build_aggregator(sc, inputs.test), outcomes_of(inputs.test), sc.policy.aggregation_s, names,
                           selector)
    if selector is None or not solve:
        return policy
    try:
        return policy.with_budgets(budgets_of(sc))
    except InfeasibleBudgets as exc:
        raise InputError(sc.file, "energy_budget_J / latency_budget_s", str(exc)) from None


def build_service(scenario: Scenario, i: int, profile: DeviceProfile) -> ServiceModel:
    """The expert's service model, with its profile's spread drawn on top when service noise is on."""
    ex = scenario.experts[i]
    service: ServiceModel = (ProfileService(profile) if ex.service == "profile"
                             else TraceReplayService(scenario.path(ex.service.file), ex.service.model))
    noise = scenario.service_noise if ex.service_noise is None else ex.service_noise
    if not noise:
        return service
    if profile.spread is None:
        raise InputError(scenario.file, f"experts.{i}.service_noise",
                         f"profile '{profile.name}' has no spread block to draw noise from")
    return NoisyService(service, profile.spread)


def device_part(profile: DeviceProfile) -> dict[str, object]:
    """What a profile says about its device rather than its model: the energy boundary, idle power and the
    batching law (slowdowns, power growth, P_max, max_batch). Experts on one device must agree on it."""
    law = DeviceLaw.of(profile)
    return {"energy_boundary": profile.boundary, "idle_power_W": profile.idle_power_W.value,
            **({"batching": None} if law is None else
               {f"batching.{k}": v for k, v in vars(law).items() if k != "idle_power_W"})}


def device_laws(scenario: Scenario, profiles: list[DeviceProfile]) -> list[DeviceLaw | None]:
    """Each expert's device law, for experts that name a `device`: the device's batching law; time sharing
    for a device that several experts name without one. None (independent slots, as without devices) for an
    expert that names no device, or is alone on one without a batching block. Experts on one device whose
    profiles disagree on its device part (device_part) are refused: one device, one physics."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(scenario.experts):
        if ex.device:
            groups.setdefault(ex.device, []).append(i)
    laws: list[DeviceLaw | None] = [None] * len(profiles)
    for device, members in groups.items():
        first = device_part(profiles[members[0]])
        for i in members[1:]:
            part = device_part(profiles[i])
            differ = [k for k in [*first, *(k for k in part if k not in first)] if first.get(k) != part.get(k)]
            if differ:
                k, j = differ[0], members[0]
                raise InputError(scenario.file, f"experts.{i}.profile", (
                    f"expert '{scenario.experts[i].name}' shares device '{device}' with '{scenario.experts[j].name}' "
                    f"but its profile '{profiles[i].name}' gives {k} = {part.get(k, 'none')} where "
                    f"'{profiles[j].name}' gives {first.get(k, 'none')}: experts on one device must share its idle "
                    "power, energy boundary and batching law (give them profiles of the same device, or separate devices)"))
        law = DeviceLaw.of(profiles[members[0]])
        if law is None and len(members) > 1:
            law = DeviceLaw.time_sharing(sum(scenario.experts[i].slots for i in members),
                                         profiles[members[0]].idle_power_W.value)
        for i in members:
            laws[i] = law
    return laws


def build_experts(scenario: Scenario, profiles: list[DeviceProfile]) -> list[SimulatedExpert]:
    """Simulated experts; the idle power of a shared device is split equally among the experts on it."""
    laws = device_laws(scenario, profiles)
    sharing = {}
    for ex in scenario.experts:
        if ex.device:
            sharing[ex.device] = sharing.get(ex.device, 0) + 1
    experts = []
    for i, (ex, profile, law) in enumerate(zip(scenario.experts, profiles, laws)):
        idle = profile.idle_power_W.value / sharing.get(ex.device, 1)
        experts.append(SimulatedExpert(ex.name, ex.slots, ex.link, build_service(scenario, i, profile), idle,
                                       ex.device or "", law,
                                       (profile.prefill_power_W.value, profile.decode_power_W.value), profile.ttft_s))
    return experts
