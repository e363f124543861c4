"""The SimPy model of MoE² serving: queries fan out to k experts, each a queue with slots.

Per query i routed to experts S_i (|S_i| = k), each leg j on expert n:
    request reaches n  at  a_i + up_n(i)            up = prompt bytes / uplink rate + propagation
    service starts     at  the FIFO turn of a free slot of n   (simpy.Resource, `slots` capacity)
    service time          ttft + decode              (ServiceModel)
    answer is back     at  end + down_n(i)           down = output bytes / downlink rate + propagation
    latency_i = max_j (answer back) - a_i + aggregation time
    energy_i  = Σ_j active energy of leg j;   idle energy = Σ_devices P_idle · run length.
Links are pure delays (no contention). Arrivals are planned a chunk at a time: the policy
is stateless in time, so deciding a chunk at its first arrival equals deciding each query
at its own arrival. Each leg is two SimPy events (reach the expert, finish service) with
callbacks into a small FIFO slot server instead of a generator process and simpy.Resource
request/release events per leg, which is what keeps the model fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections import deque
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import simpy
from simpy.events import Timeout

from moe2sim.policy import MixturePolicy
from moe2sim.scenario import Link
from moe2sim.service import ServiceModel
from moe2sim.workload import QueryBatch


@dataclass(frozen=True)
class ExpertServer:
    """An expert as the simulator sees it: its name, slots, link, service model and idle power."""

    name: str
    slots: int
    link: Link
    service: ServiceModel
    idle_power_W: float


@dataclass
class Plan:
    """A batch of queries with their routing and leg timings; start_s is filled in as legs start."""

    batch: QueryBatch
    experts: np.ndarray        # (n, k)
    weights: np.ndarray        # (n, k)
    score: np.ndarray          # (n,) aggregated answer score
    uplink_s: np.ndarray       # (n, k)
    downlink_s: np.ndarray     # (n, k)
    ttft_s: np.ndarray         # (n, k)
    decode_s: np.ndarray       # (n, k)
    energy_J: np.ndarray       # (n, k) active energy
    start_s: np.ndarray = field(init=False)
    service_s: list[list[float]] = field(init=False)

    def __post_init__(self) -> None:
        self.start_s = np.full(self.experts.shape, np.nan)
        self.service_s = (self.ttft_s + self.decode_s).tolist()


@dataclass
class SimResult:
    plans: list[Plan]
    experts: list[ExpertServer]
    run_s: float
    aggregation_s: float


class SlotServer:
    """One expert: a FIFO queue in front of `slots` identical servers (a G/G/c station).

    Driven by SimPy events: a job is (plan, i, j); its service is a Timeout, and a finished
    job hands its slot to the head of the queue. Observable state: `queued` and `busy`.
    """

    def __init__(self, env: simpy.Environment, slots: int):
        self.env = env
        self.slots = slots
        self.busy = 0
        self.waiting: deque[tuple[Plan, int, int]] = deque()

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def arrive(self, event: simpy.Event) -> None:
        if self.busy < self.slots:
            self.busy += 1
            self._start(event.value)
        else:
            self.waiting.append(event.value)

    def _start(self, job: tuple[Plan, int, int]) -> None:
        plan, i, j = job
        plan.start_s[i, j] = self.env.now
        Timeout(self.env, plan.service_s[i][j]).callbacks.append(self._finish)

    def _finish(self, _event: simpy.Event) -> None:
        if self.waiting:
            self._start(self.waiting.popleft())
        else:
            self.busy -= 1


class EdgeSimulation:
    """Runs a stream of query batches through k-way fan-out to expert queues."""

    def __init__(self, experts: list[ExpertServer], policy: MixturePolicy, prompt_ids: np.ndarray,
                 rng: np.random.Generator):
        self.experts = experts
        self.policy = policy
        self.prompt_ids = prompt_ids
        self.rng = rng
        self.env = simpy.Environment()
        self.servers = [SlotServer(self.env, e.slots) for e in experts]
        self.plans: list[Plan] = []

    def plan(self, batch: QueryBatch) -> Plan:
        """Route a batch with the policy, and draw every leg's link and service times."""
        decision = self.policy.decide(batch)
        experts = decision.experts
        shape = experts.shape
        up, down = np.empty(shape), np.empty(shape)
        ttft, dec, energy = np.empty(shape), np.empty(shape), np.empty(shape)
        ids = self.prompt_ids[batch.prompt]
        for n, ex in enumerate(self.experts):
            mask = experts == n
            if not mask.any():
                continue
            rows = np.nonzero(mask)[0]
            link = ex.link
            up[mask] = batch.prompt_bytes[rows] * 8 / (link.uplink_Mbps * 1e6) + link.propagation_s
            down[mask] = batch.output_bytes[rows] * 8 / (link.downlink_Mbps * 1e6) + link.propagation_s
            svc = ex.service.sample(batch.prompt_tokens[rows], batch.output_tokens[rows], ids[rows], self.rng)
            ttft[mask], dec[mask], energy[mask] = svc.ttft_s, svc.decode_s, svc.active_energy_J
        return Plan(batch, experts, decision.weights, self.policy.aggregate(batch, decision),
                    up, down, ttft, dec, energy)

    def _feed(self, batches: Iterator[QueryBatch], on_batch: Callable[[QueryBatch], None]):
        env = self.env
        for batch in batches:
            yield env.timeout(max(float(batch.arrival_s[0]) - env.now, 0.0))
            plan = self.plan(batch)
            self.plans.append(plan)
            reach = (batch.arrival_s[:, None] + plan.uplink_s - env.now).tolist()
            arrive = [self.servers[n].arrive for n in range(len(self.servers))]
            for i, (row, experts) in enumerate(zip(reach, plan.experts.tolist())):
                for j, delay in enumerate(row):
                    Timeout(env, delay, (plan, i, j)).callbacks.append(arrive[experts[j]])
            on_batch(batch)

    def run(self, batches: Iterator[QueryBatch],
            on_batch: Callable[[QueryBatch], None] = lambda b: None) -> SimResult:
        self.env.process(self._feed(batches, on_batch))
        self.env.run()
        return SimResult(self.plans, self.experts, float(self.env.now), self.policy.aggregation_s)


def query_records(result: SimResult, categories: list[str], budgets: np.ndarray, energy_budget_J: float,
                  prompt_ids: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-query and per-leg tables (schema in traces/README.md) from a finished simulation."""
    if not result.plans:
        raise ValueError("the simulation saw no queries")
    names = np.array([e.name for e in result.experts])
    cat = np.concatenate([p.batch.category for p in result.plans])
    arrival = np.concatenate([p.batch.arrival_s for p in result.plans])
    experts = np.concatenate([p.experts for p in result.plans])
    start = np.concatenate([p.start_s for p in result.plans])
    stack = {f: np.concatenate([getattr(p, f) for p in result.plans])
             for f in ("weights", "uplink_s", "downlink_s", "ttft_s", "decode_s", "energy_J")}
    leg_end = start + stack["ttft_s"] + stack["decode_s"]
    done = (leg_end + stack["downlink_s"]).max(axis=1) + result.aggregation_s
    latency = done - arrival
    energy = stack["energy_J"].sum(axis=1)
    score = np.concatenate([p.score for p in result.plans])
    n, k = experts.shape
    queries = pd.DataFrame({
        "query_id": np.arange(n),
        "category": pd.Categorical.from_codes(cat, categories),
        "prompt_id": prompt_ids[np.concatenate([p.batch.prompt for p in result.plans])],
        "arrival_s": arrival,
        "finish_s": done,
        "latency_s": latency,
        "prompt_tokens": np.concatenate([p.batch.prompt_tokens for p in result.plans]),
        "output_tokens": np.concatenate([p.batch.output_tokens for p in result.plans]),
        "experts": ["|".join(r) for r in names[experts]],
        "k": k,
        "score": score,
        "correct": score > 0,
        "energy_J": energy,
        "latency_budget_s": budgets[cat],
        "latency_violation": latency > budgets[cat],
        "energy_violation": energy > energy_budget_J,
    })
    legs = pd.DataFrame({
        "query_id": np.repeat(queries["query_id"].to_numpy(), k),
        "rank": np.tile(np.arange(k), n),
        "expert": pd.Categorical(names[experts.ravel()], categories=list(names)),
        "weight": stack["weights"].ravel(),
        "uplink_s": stack["uplink_s"].ravel(),
        "queue_s": (start - arrival[:, None] - stack["uplink_s"]).ravel(),
        "ttft_s": stack["ttft_s"].ravel(),
        "decode_s": stack["decode_s"].ravel(),
        "downlink_s": stack["downlink_s"].ravel(),
        "start_s": start.ravel(),
        "end_s": leg_end.ravel(),
        "energy_J": stack["energy_J"].ravel(),
    })
    return queries, legs
