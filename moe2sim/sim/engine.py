"""The SimPy model of MoE² serving: queries fan out to k experts, each a queue with slots.

Per query i routed to experts S_i (|S_i| = k), each leg j on expert n:
    request reaches n  at  a_i + up_n(i)            up = prompt bytes / uplink rate + propagation
    service starts     at  the FIFO turn of a free slot of n   (`slots` identical servers, FIFO)
    service time          ttft + decode              (ServiceModel)
    on a shared device    the device's batching law (moe2sim.sim.shared): n running requests each
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

import heapq
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import simpy

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
    share one); `powers` = its batch-1 (prefill, decode) device power, `ttft` its profile's batch-1 TTFT law.
    Without, its slots are independent."""

    name: str
    slots: int
    link: Link
    service: ServiceModel
    idle_power_W: float
    device: str = ""
    law: DeviceLaw | None = None
    powers: tuple[float, float] = (0.0, 0.0)
    ttft: Callable[[np.ndarray], np.ndarray] | None = None  # batch-1 TTFT law (prompt tokens -> s) on the device


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

    A leg's service time is known when it reaches the server, so its start follows from the legs that
    reached the server before it, by the Kiefer–Wolfowitz recursion: in order of reach time, each takes
    the slot that frees first,
        slot_at = max(reach, min_k free_k),   start = up_at(slot_at),   free_k ← start + service
    (the slot is held while the expert is down). Legs wait in an inbox ordered by reach time and are
    settled up to a time once none can still reach the server before it (the engine settles at each new
    batch and whenever it stops the clock), so a leg costs no SimPy event. Observable state: `queued`
    (reached, no slot yet) and `done_at` (when the last leg settled so far finishes).
    """

    def __init__(self, env: simpy.Environment, slots: int, up_at: Callable[[float], float] | None = None):
        self.env = env
        self.up_at = up_at  # when the expert can next work from a time (it may be down: moe2sim/sim/site.py)
        self.free = [0.0] * slots                           # heap: when each slot frees up
        self.inbox: list[tuple[float, int, Plan, int, int]] = []  # heap: (reach, arrival order, plan, i, j)
        self.slot_at: list[float] = []                      # heap: when each queued leg gets its slot
        self.received = 0
        self.done_at = 0.0

    def receive(self, reach: float, plan: Plan, i: int, j: int) -> None:
        heapq.heappush(self.inbox, (reach, self.received, plan, i, j))
        self.received += 1

    def settle(self, until: float) -> None:
        """Start, in reach order, every leg that reached the server before `until`."""
        inbox, free, up_at = self.inbox, self.free, self.up_at
        while inbox and inbox[0][0] < until:
            reach, _, plan, i, j = heapq.heappop(inbox)
            slot_at = max(reach, free[0])
            start = slot_at if up_at is None else up_at(slot_at)
            plan.start_s[i, j] = start
            end = start + plan.service_s[i][j]
            heapq.heapreplace(free, end)
            if slot_at > reach:
                heapq.heappush(self.slot_at, slot_at)
            if end > self.done_at:
                self.done_at = end

    @property
    def queued(self) -> int:
        now, slot_at = self.env.now, self.slot_at
        self.settle(now)
        while slot_at and slot_at[0] <= now:
            heapq.heappop(slot_at)
        return len(slot_at)


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
            devices[key] = SharedDevice(env, e.law, {}, {})
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
