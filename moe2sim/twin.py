"""Assembling a runnable twin from a scenario: data, expert servers, workload, policy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.errors import InputError
from moe2sim.policy import CategoryTablePolicy, Policy
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


@dataclass
class Twin:
    """Everything a simulation of one scenario needs, built and checked once."""

    scenario: Scenario
    quality: QualityData
    profiles: list[DeviceProfile]
    experts: list[ExpertServer]
    workload: Workload
    policy: Policy

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
                raise InputError(scenario.base_dir, f"experts.{i}.profile",
                                 f"unknown device profile '{ex.profile}' (no file {path})")
            profile = load_profile(path)
            service = (ProfileService(profile) if ex.service == "profile"
                       else TraceReplayService(scenario.path(ex.service.file), ex.service.model))
            profiles.append(profile)
            servers.append(ExpertServer(ex.name, ex.slots, ex.link, service, profile.idle_power_W.value))
        return cls(scenario, quality, profiles, servers, Workload(scenario, quality),
                   cls._policy(scenario, prompts_path, quality_path, models))

    @staticmethod
    def _policy(scenario: Scenario, prompts_path: Path, quality_path: Path, models: list[str]) -> Policy:
        names = [e.name for e in scenario.experts]
        allowed = [names.index(n) for n in scenario.allowed_experts]
        cfg = scenario.policy
        if cfg.name == "fixed_subset":
            return CategoryTablePolicy.fixed_subset(len(scenario.categories), allowed, cfg.k, cfg.aggregation_s)
        train = load_quality(prompts_path, quality_path, models, "train")
        return CategoryTablePolicy.prior_accuracy(category_prior(train, scenario), allowed, cfg.k,
                                                  cfg.aggregation_s)

    def simulate(self, seed: int | None = None, progress: bool = False) -> tuple[SimResult, pd.DataFrame, pd.DataFrame]:
        """Run the scenario; returns the raw result and the per-query and per-leg records."""
        rng = np.random.default_rng(self.scenario.seed if seed is None else seed)
        prompt_ids = self.quality.prompts["prompt_id"].astype(str).to_numpy()
        sim = EdgeSimulation(self.experts, self.policy, self.quality.scores, prompt_ids, rng)
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

