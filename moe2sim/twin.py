"""Assembling a runnable twin from a scenario: data, expert servers, workload, policy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.aggregation import Aggregator, HighestWeight, Oracle, WeightedVote
from moe2sim.embed import load_embeddings
from moe2sim.errors import InputError
from moe2sim.policy import FixedRouter, GateRouter, MixturePolicy, PriorRouter, Router
from moe2sim.profiles import DeviceProfile, load_profile
from moe2sim.scenario import Scenario
from moe2sim.service import ProfileService, TraceReplayService
from moe2sim.sim import EdgeSimulation, ExpertServer, SimResult, query_records
from moe2sim.traces import QualityData, load_quality
from moe2sim.workload import Workload


def profile_path(scenario: Scenario, ref: str) -> Path:
    """A profile is named (data_dir/profiles/NAME.yaml) or given as a path to a YAML file."""
    if ref.endswith((".yaml", ".yml")):
        return scenario.path(ref)
    return scenario.path(f"profiles/{ref}.yaml")


def category_prior(train: QualityData, scenario: Scenario) -> np.ndarray:
    """prior[c, e]: expert e's train accuracy on category c (all train prompts if the task has none)."""
    correct = train.scores > 0
    prior = np.empty((len(scenario.categories), len(train.experts)))
    for c, cat in enumerate(scenario.categories):
        rows = train.rows_of_task(cat.trace_task)
        prior[c] = correct[rows].mean(axis=0) if len(rows) else correct.mean(axis=0)
    return prior


def answer_options(quality: QualityData, scenario: Scenario) -> np.ndarray:
    """Choices per prompt row from its category's answer_options (0: free-form)."""
    options = np.zeros(len(quality.prompts), np.int64)
    for cat in scenario.categories:
        options[quality.rows_of_task(cat.trace_task)] = cat.answer_options or 0
    return options


def build_aggregator(scenario: Scenario, quality: QualityData) -> Aggregator:
    name = scenario.policy.aggregation
    if name == "weighted_vote":
        return WeightedVote.assumed_answers(quality.scores, answer_options(quality, scenario), scenario.policy.vote_seed)
    return HighestWeight(quality.scores) if name == "highest_weight" else Oracle(quality.scores)


def build_router(scenario: Scenario, quality: QualityData) -> Router:
    cfg = scenario.policy
    if cfg.name == "fixed_subset":
        names = scenario.allowed_experts
        order = [names.index(e.name) if e.name in names else len(names) for e in scenario.experts]
        return FixedRouter(np.asarray(order, float))
    if cfg.name == "prior_accuracy":
        train = load_quality(scenario.path(scenario.traces.prompts), scenario.path(scenario.traces.quality),
                             list(quality.experts), "train")
        return PriorRouter(category_prior(train, scenario))
    from moe2sim.gate import Gate  # torch is imported only when a gate is used

    gate_path = scenario.path(cfg.gate)
    gate = Gate.load(gate_path)
    missing = [m for m in quality.experts if m not in gate.experts]
    if missing:
        raise InputError(scenario.file, "policy.gate", f"{gate_path} was trained without model(s) {missing}")
    emb_path = scenario.path(scenario.traces.embeddings)
    x = load_embeddings(emb_path, quality.prompts["prompt_id"].astype(str).to_numpy(), gate.dim)
    columns = [gate.experts.index(m) for m in quality.experts]
    tasks = quality.prompts["task"].astype(str).to_numpy()
    return GateRouter(gate.logits(x, tasks)[:, columns])


def build_policy(scenario: Scenario, quality: QualityData) -> MixturePolicy:
    names = [e.name for e in scenario.experts]
    allowed = np.isin(names, scenario.allowed_experts)
    return MixturePolicy(build_router(scenario, quality), allowed, scenario.policy.k,
                         build_aggregator(scenario, quality), scenario.policy.aggregation_s)


@dataclass
class Twin:
    """Everything a simulation of one scenario needs, built and checked once."""

    scenario: Scenario
    quality: QualityData
    profiles: list[DeviceProfile]
    experts: list[ExpertServer]
    workload: Workload
    policy: MixturePolicy

    @classmethod
    def build(cls, scenario: Scenario) -> "Twin":
        models = [e.model for e in scenario.experts]
        prompts_path = scenario.path(scenario.traces.prompts)
        quality_path = scenario.path(scenario.traces.quality)
        quality = load_quality(prompts_path, quality_path, models, scenario.traces.split)
        profiles, servers = [], []
        for i, ex in enumerate(scenario.experts):
            path = profile_path(scenario, ex.profile)
            if not path.is_file():
                raise InputError(scenario.file, f"experts.{i}.profile",
                                 f"unknown device profile '{ex.profile}' (no file {path})")
            profile = load_profile(path)
            service = (ProfileService(profile) if ex.service == "profile"
                       else TraceReplayService(scenario.path(ex.service.file), ex.service.model))
            profiles.append(profile)
            servers.append(ExpertServer(ex.name, ex.slots, ex.link, service, profile.idle_power_W.value))
        return cls(scenario, quality, profiles, servers, Workload(scenario, quality),
                   build_policy(scenario, quality))

    def simulate(self, seed: int | None = None, progress: bool = False) -> tuple[SimResult, pd.DataFrame, pd.DataFrame]:
        """Run the scenario; returns the raw result and the per-query and per-leg records."""
        rng = np.random.default_rng(self.scenario.seed if seed is None else seed)
        prompt_ids = self.quality.prompts["prompt_id"].astype(str).to_numpy()
        sim = EdgeSimulation(self.experts, self.policy, prompt_ids, rng)
        with _progress(self.scenario, progress) as bar:
            result = sim.run(self.workload.batches(rng), lambda b: bar.update(len(b)))
        budgets = np.array([c.latency_budget_s for c in self.scenario.categories])
        queries, legs = query_records(result, [c.name for c in self.scenario.categories], budgets,
                                      self.scenario.energy_budget_J, prompt_ids)
        return result, queries, legs


def _progress(scenario: Scenario, enabled: bool):
    from tqdm import tqdm

    total = scenario.queries
    return tqdm(total=total, unit="q", desc="simulating", disable=None if enabled else True,
                mininterval=0.5, leave=False)

