"""The SimPy model of MoE² serving: queries fan out to k experts, each a queue with slots.

Per query i routed to experts S_i (|S_i| = k), each leg j on expert n:
    request reaches n  at  a_i + up_n(i)            up = prompt bytes / uplink rate + propagation
    service starts     at  the FIFO turn of a free slot of n   (`slots` identical servers, FIFO)
    service time          ttft + decode              (ServiceModel)
    on a shared device    the device's batching law (moe2sim.sim.batched_device): n running requests each
                          progress at 1/(1 + β(n−1)) of batch-1 speed, P(n) split among them
    answer is back     at  end + down_n(i)           down = output bytes / downlink rate + propagation
    latency_i = max_j (answer back) - a_i + aggregation time
    energy_i  = Σ_j active energy of leg j;   idle energy = Σ_devices P_idle · run length.
Links are pure delays (no contention). Arrivals are planned a chunk at a time: the policy
is stateless in time, so deciding a chunk at its first arrival equals deciding each query
at its own arrival. A leg on an expert with its own slots is no SimPy event: the FIFO slot server
computes its start by the Kiefer–Wolfowitz recursion, in reach order, once no earlier leg can still
reach it (instead of a process and simpy.Resource request/release events per leg), which is what
keeps the model fast. Legs on a shared device are SimPy events (arrival, completion).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Iterator

import numpy as np
import simpy

from moe2sim.policy import MixturePolicy
from moe2sim.sim.batched_device import BatchedDevice, DevicePort
from moe2sim.sim.entities import Plan, SimResult, SimulatedExpert
from moe2sim.sim.site import SiteSchedule
from moe2sim.sim.slot_server import SlotServer
from moe2sim.workload import QueryBatch


def build_servers(env: simpy.Environment, experts: list[SimulatedExpert],
                  up_at: Callable[[int], Callable[[float], float] | None] = lambda n: None
                  ) -> list[SlotServer | DevicePort]:
    """One server per expert: its own SlotServer (down when the site says, `up_at(n)`), or its port on the
    shared device it names (the law of the device's first expert governs it; site outages are not applied
    to shared devices)."""
    devices: dict[str, BatchedDevice] = {}
    servers: list[SlotServer | DevicePort] = []
    for x, e in enumerate(experts):
        if e.law is None:
            servers.append(SlotServer(env, e.slots, up_at(x)))
            continue
        key = e.device or f"expert:{e.name}"
        if key not in devices:
            devices[key] = BatchedDevice(env, e.law, {}, {})
        devices[key].powers[x] = e.powers
        devices[key].ttft[x] = e.ttft
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
            self._settle(env.now)
            reach = (batch.arrival_s[:, None] + plan.uplink_s).tolist()
            receive = [server.receive for server in self.servers]
            for i, (row, experts) in enumerate(zip(reach, plan.experts.tolist())):
                for j, t in enumerate(row):
                    receive[experts[j]](t, plan, i, j)
            on_batch(batch)

    def _settle(self, until: float) -> None:
        for server in self.servers:
            server.settle(until)

    def start(self, batches: Iterator[QueryBatch], on_batch: Callable[[QueryBatch], None] = lambda b: None) -> None:
        self.env.process(self._feed(batches, on_batch))

    def advance(self, until: float | None = None) -> None:
        """Simulate up to `until` (events at exactly `until` are left for later), or to the end."""
        self.env.run(until)
        self._settle(math.inf if until is None else until)

    def result(self) -> SimResult:
        """The plans so far; the run lasts until the last event or the last service started so far ends."""
        run_s = max([self.env.now] + [s.done_at for s in self.servers])
        return SimResult(self.plans, self.experts, float(run_s), self.policy.aggregation_s)

    def run(self, batches: Iterator[QueryBatch],
            on_batch: Callable[[QueryBatch], None] = lambda b: None) -> SimResult:
        self.start(batches, on_batch)
        self.advance()
        return self.result()
