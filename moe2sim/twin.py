"""Assembling a runnable twin from a scenario: data, expert servers, workload, policy."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.build import build_policy
from moe2sim.errors import InputError
from moe2sim.policy import MixturePolicy
from moe2sim.profiles import DeviceProfile, load_profile
from moe2sim.scenario import Scenario
from moe2sim.selection import Budgets
from moe2sim.service import ProfileService, TraceReplayService
from moe2sim.sim import EdgeSimulation, ExpertServer, SimResult, query_records
from moe2sim.traces import QualityData, load_quality
from moe2sim.workload import Workload


def profile_path(scenario: Scenario, ref: str) -> Path:
    """A profile is named (data_dir/profiles/NAME.yaml) or given as a path to a YAML file."""
    if ref.endswith((".yaml", ".yml")):
        return scenario.path(ref)
    return scenario.path(f"profiles/{ref}.yaml")


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
        workload = Workload(scenario, quality)
        return cls(scenario, quality, profiles, servers, workload,
                   build_policy(scenario, quality, profiles, workload))

    def with_budgets(self, budgets: Budgets) -> "Twin":
        """The same twin judged against other budgets (the policy's subset is not re-solved here)."""
        scenario = self.scenario.model_copy(update={
            "energy_budget_J": budgets.energy_J,
            "categories": [c.model_copy(update={"latency_budget_s": float(t)})
                           for c, t in zip(self.scenario.categories, budgets.latency_s)]})
        return replace(self, scenario=scenario)

    def streams(self, seed: int | None = None) -> tuple[np.random.Generator, np.random.Generator]:
        """Independent random streams for the arrivals and for service draws, so that the workload of
        a seed never depends on how many service draws the policy's choices cause."""
        arrivals, service = np.random.SeedSequence(self.scenario.seed if seed is None else seed).spawn(2)
        return np.random.default_rng(arrivals), np.random.default_rng(service)

    def simulate(self, seed: int | None = None, progress: bool = False) -> tuple[SimResult, pd.DataFrame, pd.DataFrame]:
        """Run the scenario; returns the raw result and the per-query and per-leg records."""
        arrivals, service = self.streams(seed)
        prompt_ids = self.quality.prompts["prompt_id"].astype(str).to_numpy()
        sim = EdgeSimulation(self.experts, self.policy, prompt_ids, service)
        with _progress(self.scenario, progress) as bar:
            result = sim.run(self.workload.batches(arrivals), lambda b: bar.update(len(b)))
        budgets = np.array([c.latency_budget_s for c in self.scenario.categories])
        queries, legs = query_records(result, [c.name for c in self.scenario.categories], budgets,
                                      self.scenario.energy_budget_J, prompt_ids)
        return result, queries, legs


def _progress(scenario: Scenario, enabled: bool):
    from tqdm import tqdm

    total = scenario.queries
    return tqdm(total=total, unit="q", desc="simulating", disable=None if enabled else True,
                mininterval=0.5, leave=False)

