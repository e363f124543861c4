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
from moe2sim.selection import Budgets, worst_delay
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
    subset: str                # the allowed subset S when the batch was routed
    worst_delay_s: np.ndarray  # (n,) predicted worst-case delay of S for the query's category (NaN: no selector)
    worst_energy_J: float      # predicted worst-case energy of S (NaN: no selector)
    budgets: Budgets | None    # budgets in force when routed (None: the scenario's)
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
        subset = "|".join(e.name for e, ok in zip(self.experts, self.policy.allowed) if ok)
        selector = self.policy.selector
        if selector is not None and selector.last is not None:
            worst = worst_delay(selector.problem, selector.last.mask)[batch.category]
            worst_energy = selector.problem.energy_of(selector.last.mask)
        else:
            worst, worst_energy = np.full(len(batch), np.nan), np.nan
        return Plan(batch, experts, decision.weights, self.policy.aggregate(batch, decision),
                    up, down, ttft, dec, energy, subset, worst, worst_energy, self.policy.budgets)

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

    def start(self, batches: Iterator[QueryBatch], on_batch: Callable[[QueryBatch], None] = lambda b: None) -> None:
        self.env.process(self._feed(batches, on_batch))

    def advance(self, until: float | None = None) -> None:
        """Simulate up to `until` (events at exactly `until` are left for later), or to the end."""
        self.env.run(until)

    def result(self) -> SimResult:
        return SimResult(self.plans, self.experts, float(self.env.now), self.policy.aggregation_s)

    def run(self, batches: Iterator[QueryBatch],
            on_batch: Callable[[QueryBatch], None] = lambda b: None) -> SimResult:
        self.start(batches, on_batch)
        self.advance()
        return self.result()


def _plan_records(p: Plan, names: np.ndarray, budgets: np.ndarray, energy_budget_J: float, aggregation_s: float,
                  prompt_ids: np.ndarray, first_id: int) -> tuple[dict, dict]:
    b = p.batch
    n, k = p.experts.shape
    ids = np.arange(first_id, first_id + n)
    leg_end = p.start_s + p.ttft_s + p.decode_s
    done = (leg_end + p.downlink_s).max(axis=1) + aggregation_s
    latency = done - b.arrival_s
    energy = p.energy_J.sum(axis=1)
    if p.budgets is not None:
        budgets, energy_budget_J = p.budgets.latency_s, p.budgets.energy_J
    query = {
        "query_id": ids, "category": b.category, "prompt_id": prompt_ids[b.prompt], "arrival_s": b.arrival_s,
        "finish_s": done, "latency_s": latency, "prompt_tokens": b.prompt_tokens, "output_tokens": b.output_tokens,
        "experts": ["|".join(r) for r in names[p.experts]], "k": np.full(n, k), "score": p.score,
        "correct": p.score > 0, "energy_J": energy, "latency_budget_s": budgets[b.category],
        "latency_violation": latency > budgets[b.category], "energy_budget_J": np.full(n, energy_budget_J),
        "energy_violation": energy > energy_budget_J, "subset": np.repeat(p.subset, n), "predicted_worst_delay_s": p.worst_delay_s,
        "predicted_worst_energy_J": np.full(n, p.worst_energy_J),
    }
    leg = {
        "query_id": np.repeat(ids, k), "rank": np.tile(np.arange(k), n), "expert": p.experts.ravel(),
        "weight": p.weights.ravel(), "uplink_s": p.uplink_s.ravel(),
        "queue_s": (p.start_s - b.arrival_s[:, None] - p.uplink_s).ravel(), "ttft_s": p.ttft_s.ravel(),
        "decode_s": p.decode_s.ravel(), "downlink_s": p.downlink_s.ravel(), "start_s": p.start_s.ravel(),
        "end_s": leg_end.ravel(), "energy_J": p.energy_J.ravel(),
    }
    return query, leg


def query_records(result: SimResult, categories: list[str], budgets: np.ndarray, energy_budget_J: float,
                  prompt_ids: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-query and per-leg tables (schema in traces/README.md) from a finished simulation."""
    if not result.plans:
        raise ValueError("the simulation saw no queries")
    names = np.array([e.name for e in result.experts])
    parts, first = [], 0
    for p in result.plans:
        parts.append(_plan_records(p, names, budgets, energy_budget_J, result.aggregation_s, prompt_ids, first))
        first += len(p.batch)
    queries = pd.DataFrame({c: np.concatenate([q[c] for q, _ in parts]) for c in parts[0][0]})
    legs = pd.DataFrame({c: np.concatenate([g[c] for _, g in parts]) for c in parts[0][1]})
    queries["category"] = pd.Categorical.from_codes(queries["category"], categories)
    legs["expert"] = pd.Categorical.from_codes(legs["expert"], list(names))
    return queries, legs
