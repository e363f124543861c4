"""A runnable twin of one scenario: its data, simulated experts, workload and policy, built once by
the factory, simulated as often as asked (each seed an independent replication)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from moe2sim.data.quality import QualityData
from moe2sim.errors import InputError
from moe2sim.devices.profiles import DeviceProfile
from moe2sim.policy import MixturePolicy
from moe2sim.scenario import Scenario
from moe2sim.selection.budgets import Budgets, budgets_of
from moe2sim.sim.engine import EdgeSimulation
from moe2sim.sim.entities import SimResult, SimulatedExpert
from moe2sim.sim.site import SiteSchedule
from moe2sim.twin.factory import Inputs, build_experts, build_policy
from moe2sim.workload import Workload


@dataclass(frozen=True)
class Twin:
    """Everything a simulation of one scenario needs, built and checked once."""

    scenario: Scenario
    inputs: Inputs
    profiles: list[DeviceProfile]
    experts: list[SimulatedExpert]
    workload: Workload
    policy: MixturePolicy

    @classmethod
    def build(cls, scenario: Scenario, solve: bool = True) -> "Twin":
        """Read and check every input once; `solve`: choose S for the scenario's budgets now (else the
        caller sets budgets with `with_budgets` before simulating)."""
        inputs = Inputs(scenario)
        profiles = inputs.profiles()
        workload = Workload(scenario, inputs.test)
        return cls(scenario, inputs, profiles, build_experts(scenario, profiles), workload,
                   build_policy(inputs, profiles, workload, solve))

    @property
    def quality(self) -> QualityData:
        return self.inputs.test

    def with_budgets(self, budgets: Budgets) -> "Twin":
        """The same twin under other budgets: the scenario's budgets replaced, and S re-solved when the
        policy has a selector (raises InfeasibleBudgets)."""
        scenario = self.scenario.model_copy(update={
            "energy_budget_J": budgets.energy_J,
            "categories": [c.model_copy(update={"latency_budget_s": float(t)})
                           for c, t in zip(self.scenario.categories, budgets.latency_s)]})
        policy = self.policy.with_budgets(budgets) if self.policy.selector is not None else self.policy
        return replace(self, scenario=scenario, policy=policy)

    def streams(self, seed: int | None = None) -> tuple[np.random.Generator, ...]:
        """Independent random streams for the arrivals, the service draws, the routing and the answers'
        outcomes, so that the workload of a seed never depends on how many draws the policy's choices cause."""
        seq = np.random.SeedSequence(self.scenario.seed if seed is None else seed)
        return tuple(np.random.default_rng(s) for s in seq.spawn(4))

    def simulation(self, seed: int | None = None) -> tuple[EdgeSimulation, np.random.Generator]:
        """A fresh simulation of this twin and its arrivals stream."""
        arrivals, service, routing, outcomes = self.streams(seed)
        return EdgeSimulation(self.experts, self.policy, self.quality.prompt_ids, service, routing, outcomes,
                              SiteSchedule.of(self.scenario)), arrivals

    def check_arrivals(self, seed: int | None = None) -> None:
        """Refuse, before simulating, a run in which no query would arrive (the first chunk of arrivals of
        this seed is empty: a duration shorter than the first gap, replayed times all past it), and a run of a
        randomized site: only the gym environment draws one (per episode), a run would silently take the
        nominal site."""
        site = self.scenario.site
        if site is not None and site.random is not None:
            raise InputError(self.scenario.file, "site.random", "a randomized site is drawn per episode by the gym "
                             "environment (moe2sim rollout, BudgetEnv); `run` and `sweep` simulate one fixed site: "
                             "give it with site.outages / site.energy_price")
        if next(self.workload.batches(self.streams(seed)[0]), None) is None:
            self._no_queries("the run")

    def _no_queries(self, what: str) -> None:
        sc = self.scenario
        field = "duration_s" if sc.duration_s is not None else "arrivals"
        raise InputError(sc.file, field, f"no query arrives in {what} (duration_s {sc.duration_s}): lengthen "
                                         "duration_s or raise the arrival rate")

    def records(self, result: SimResult) -> tuple[pd.DataFrame, pd.DataFrame]:
        if not result.plans:
            self._no_queries("the episode" if self.scenario.env is not None else "the run")
        budgets = budgets_of(self.scenario)
        return result.records(self.quality.prompt_ids, [c.name for c in self.scenario.categories],
                              budgets.latency_s, budgets.energy_J)

    def simulate(self, seed: int | None = None, progress: bool = False) -> tuple[SimResult, pd.DataFrame, pd.DataFrame]:
        """Run the scenario; returns the raw result and the per-query and per-leg records."""
        self.check_arrivals(seed)
        sim, arrivals = self.simulation(seed)
        with _progress(self.scenario, progress) as bar:
            result = sim.run(self.workload.batches(arrivals), lambda b: bar.update(len(b)))
        return (result, *self.records(result))


def _progress(scenario: Scenario, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=scenario.queries, unit="q", desc="simulating", disable=None if enabled else True,
                mininterval=0.5, leave=False)
