"""The SimPy model of MoE² serving: queries fan out to k experts, each a queue with slots.

Per query i routed to experts S_i (|S_i| = k), each leg j on expert n:
    request reaches n  at  a_i + up_n(i)            up = prompt bytes / uplink rate + propagation
    service starts     at  the FIFO turn of a free slot of n   (simpy.Resource, `slots` capacity)
    service time          ttft + decode              (ServiceModel)
    on a shared device    the device's batching law (moe2sim.sim.shared): n running requests each
                          progress at 1/(1 + β(n−1)) of batch-1 speed, P(n) split among them
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
from functools import partial
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import simpy
from simpy.events import Timeout

from moe2sim.devices.service import ServiceModel
from moe2sim.devices.sharing import DeviceLaw
from moe2sim.policy import MixturePolicy
from moe2sim.scenario import Link
from moe2sim.selection.budgets import Budgets
from moe2sim.sim.records import Legs, frames
from moe2sim.sim.shared import DevicePort, SharedDevice
from moe2sim.sim.site import SiteSchedule
from moe2sim.workload import QueryBatch


@dataclass(frozen=True)
class SimulatedExpert:
    """An expert as the simulator sees it: its name, slots, link, service model and idle power (its share
    of its device's). With a `law`, it runs on the shared device `device` (experts with the same device
    share one); `powers` = its batch-1 (prefill, decode) device power. Without, its slots are independent."""

    name: str
    slots: int
    link: Link
    service: ServiceModel
    idle_power_W: float
    device: str = ""
    law: DeviceLaw | None = None
    powers: tuple[float, float] = (0.0, 0.0)


@dataclass
class Plan:
    """A batch of queries with their routing and leg timings; start_s is filled in as legs start."""

    batch: QueryBatch
    experts: np.ndarray        # (n, k)
    weights: np.ndarray        # (n, k)
    score: np.ndarray          # (n,) probability that the combined answer is right, given the experts
    correct: np.ndarray        # (n,) bool: the combined answer was right (seeded draw)
    uplink_s: np.ndarray       # (n, k)
    downlink_s: np.ndarray     # (n, k)
    ttft_s: np.ndarray         # (n, k)
    decode_s: np.ndarray       # (n, k)
    energy_J: np.ndarray       # (n, k) active energy
    subset: str                # the allowed subset S when the batch was routed
    worst_delay_s: np.ndarray  # (n,) predicted worst-case delay of S for the query's category (NaN: no selector)
    worst_energy_J: float      # predicted worst-case energy of S (NaN: no selector)
    budgets: Budgets | None    # budgets in force when routed (None: the scenario's)
    first_id: int              # query_id of the batch's first query
    start_s: np.ndarray = field(init=False)
    service_s: list[list[float]] = field(init=False)

    def __post_init__(self) -> None:
        self.start_s = np.full(self.experts.shape, np.nan)
        self.service_s = (self.ttft_s + self.decode_s).tolist()

    def legs(self, prompt_ids: np.ndarray, latency_budget_s: np.ndarray, energy_budget_J: float) -> Legs:
        """The plan as record inputs; budgets are those in force when routed, else the given ones."""
        b, n = self.batch, len(self.batch)
        if self.budgets is not None:
            latency_budget_s, energy_budget_J = self.budgets.latency_s, self.budgets.energy_J
        return Legs(
            query_id=np.arange(self.first_id, self.first_id + n), category=b.category, prompt_id=prompt_ids[b.prompt],
            arrival_s=b.arrival_s, prompt_tokens=b.prompt_tokens, output_tokens=b.output_tokens,
            experts=self.experts, weights=self.weights, score=self.score, correct=self.correct,
            energy_J=self.energy_J,
            uplink_s=self.uplink_s, queue_s=self.start_s - b.arrival_s[:, None] - self.uplink_s, ttft_s=self.ttft_s,
            decode_s=self.decode_s, downlink_s=self.downlink_s, start_s=self.start_s,
            latency_budget_s=latency_budget_s[b.category], energy_budget_J=np.full(n, energy_budget_J),
            subset=np.repeat(self.subset, n), predicted_worst_delay_s=self.worst_delay_s,
            predicted_worst_energy_J=np.full(n, self.worst_energy_J))


@dataclass
class SimResult:
    plans: list[Plan]
    experts: list[SimulatedExpert]
    run_s: float
    aggregation_s: float

    def records(self, prompt_ids: np.ndarray, categories: list[str], latency_budget_s: np.ndarray,
                energy_budget_J: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Per-query and per-leg tables (moe2sim.sim.records) of a finished simulation."""
        names = [e.name for e in self.experts]
        blocks = [p.legs(prompt_ids, latency_budget_s, energy_budget_J).tables(names, self.aggregation_s)
                  for p in self.plans]
        return frames(blocks, categories, names)


class SlotServer:
    """One expert: a FIFO queue in front of `slots` identical servers (a G/G/c station).

    Driven by SimPy events: a job is (plan, i, j); its service is a Timeout, and a finished
    job hands its slot to the head of the queue. Observable state: `queued` and `busy`.
    """

    def __init__(self, env: simpy.Environment, slots: int, up_at: Callable[[float], float] | None = None):
        self.env = env
        self.slots = slots
        self.up_at = up_at  # when the expert can next work from a time (it may be down: moe2sim/sim/site.py)
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
        now = self.env.now
        wait = 0.0 if self.up_at is None else self.up_at(now) - now
        plan.start_s[i, j] = now + wait
        Timeout(self.env, wait + plan.service_s[i][j]).callbacks.append(self._finish)

    def _finish(self, _event: simpy.Event) -> None:
        if self.waiting:
            self._start(self.waiting.popleft())
        else:
            self.busy -= 1


def build_servers(env: simpy.Environment, experts: list[SimulatedExpert],
                  up_at: Callable[[int], Callable[[float], float] | None] = lambda n: None
                  ) -> list[SlotServer | DevicePort]:
    """One server per expert: its own SlotServer (down when the site says, `up_at(n)`), or its port on the
    shared device it names (the law of the device's first expert governs it; site outages are not applied
    to shared devices)."""
    devices: dict[str, SharedDevice] = {}
    servers: list[SlotServer | DevicePort] = []
    for x, e in enumerate(experts):
        if e.law is None:
            servers.append(SlotServer(env, e.slots, up_at(x)))
            continue
        key = e.device or f"expert:{e.name}"
        if key not in devices:
            devices[key] = SharedDevice(env, e.law, {})
        devices[key].powers[x] = e.powers
        servers.append(devices[key].port(x))
    return servers


class EdgeSimulation:
    """Runs a stream of query batches through k-way fan-out to expert queues.

    `policy` is the policy in force; a controller (the gym environment) replaces it between
    windows with `policy.with_budgets(...)`. Routing, service and answer-outcome draws use their own streams.
    `site` (moe2sim/sim/site.py) makes experts go down or slow down over time."""

    def __init__(self, experts: list[SimulatedExpert], policy: MixturePolicy, prompt_ids: np.ndarray,
                 service_rng: np.random.Generator, routing_rng: np.random.Generator, outcome_rng: np.random.Generator,
                 site: SiteSchedule | None = None):
        self.experts = experts
        self.policy = policy
        self.prompt_ids = prompt_ids
        self.rng = service_rng
        self.routing_rng = routing_rng
        self.outcome_rng = outcome_rng
        self.env = simpy.Environment()
        self.site = None if site is None or site.static else site
        self.servers = build_servers(self.env, experts, lambda n: partial(self.site.up_at, n)
                                     if self.site and self.site.down[n] else None)
        self.plans: list[Plan] = []
        self.queries = 0

    def plan(self, batch: QueryBatch) -> Plan:
        """Route a batch with the policy, and draw every leg's link and service times."""
        policy = self.policy
        decision = policy.decide(batch, self.routing_rng)
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
        if self.site is not None:
            time_x, energy_x = self.site.scales(batch.arrival_s)
            time_x, energy_x = (np.take_along_axis(x, experts, axis=1) for x in (time_x, energy_x))
            ttft, dec, energy = ttft * time_x, dec * time_x, energy * energy_x
        worst, worst_energy = policy.predicted_worst(batch.category)
        correct, p_correct = policy.aggregate(batch, decision, self.outcome_rng)
        plan = Plan(batch, experts, decision.weights, p_correct, correct, up, down, ttft, dec, energy,
                    "|".join(policy.subset), worst, worst_energy, policy.budgets, self.queries)
        self.queries += len(batch)
        return plan

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
