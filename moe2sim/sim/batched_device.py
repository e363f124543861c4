"""A device shared by the requests running on it: an event-driven fluid model of moe2sim.devices.batching_law.

Each running request carries its remaining work of the current phase in batch-1 seconds (prefill:
its sampled ttft; decode: its sampled decode time). Between events the number running, n, is fixed,
so every request advances at a fixed speed: 1/s_d in decode (β_d, and κ times the other running
requests' prompt tokens), 1/s_p(n) in prefill (its own stretch: the law's β_p, or its prompt's TTFT law at
n times the prompt). Speeds depend on the running set only, not on phases, so a prefill ending changes no
one's speed, only the phase mix of P1: it is not an event.
Advancing to now finds the prefills that ended inside the interval (ttft = the instant it ended; the rest of the
interval goes to decode) and integrates P(n) piecewise between those instants. Events are arrivals
and completions: at each, the state is advanced, finished requests leave, waiting requests are
admitted (FIFO, up to max_batch), and one timer is set for the earliest completion. Timers set
before a change are stale: a version number ignores them. Legs in flight have decode = inf (and
ttft = inf until their prefill ended) in their plan; their real values once done.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np
import simpy
from simpy.events import Timeout

from moe2sim.devices.batching_law import DeviceLaw, Stretch
from moe2sim.sim.entities import Plan

EPS_S = 1e-9  # remaining batch-1 work below this is done (float residue of advancing)


class _Running:
    __slots__ = ("plan", "i", "j", "power", "prompt", "stretch", "work", "decode", "phase", "energy", "factor",
                 "start", "ttft")

    def __init__(self, plan: Plan, i: int, j: int, power: tuple[float, float], prompt: float, stretch: Stretch,
                 factor: float, start: float):
        self.plan, self.i, self.j, self.power, self.prompt, self.stretch = plan, i, j, power, prompt, stretch
        self.work = float(plan.ttft_s[i, j])
        self.decode = float(plan.decode_s[i, j])
        self.phase = 0
        self.energy = 0.0
        self.factor = factor
        self.start = start
        self.ttft = 0.0


class BatchedDevice:
    """One device, the experts placed on it, a FIFO queue and the running set (see the module docstring).

    `powers[x]` = (prefill W, decode W) of expert x at batch 1 (whole device, within its boundary);
    `ttft[x]` = its batch-1 TTFT law (prompt tokens -> s), which the "tokens" prefill law needs."""

    def __init__(self, env: simpy.Environment, law: DeviceLaw, powers: dict[int, tuple[float, float]],
                 ttft: dict[int, Callable[[np.ndarray], np.ndarray] | None]):
        self.env = env
        self.law = law
        self.powers = powers
        self.ttft = ttft
        self.running: list[_Running] = []
        self.waiting: deque[tuple[Plan, int, int, int]] = deque()
        self.t = 0.0
        self.version = 0

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def port(self, expert: int) -> "DevicePort":
        return DevicePort(self, expert)

    def arrive(self, job: tuple[Plan, int, int], expert: int) -> None:
        self.waiting.append((*job, expert))
        if len(self.running) < self.law.max_batch:  # else nothing changes until a completion
            self._advance()
            self._settle()

    def _advance(self) -> None:
        """Bring every running request's work, phase and energy to env.now at the current n."""
        now = self.env.now
        t0 = self.t
        dt = now - t0
        self.t = now
        run = self.running
        if dt <= 0 or not run:
            return
        n = len(run)
        context = sum(r.prompt for r in run)
        phase_power = 0.0
        switches: list[tuple[float, float]] = []  # (offset of a prefill end, change of Σ phase power)
        for r in run:
            slow_d = self.law.decode_stretch(n, context - r.prompt)
            if r.phase:
                r.work -= dt / slow_d
                phase_power += r.power[1]
                continue
            phase_power += r.power[0]
            slow_p = r.stretch(n)
            tau = r.work * slow_p
            if tau < dt:
                r.phase, r.ttft = 1, t0 + tau - r.start
                r.plan.ttft_s[r.i, r.j] = r.ttft
                r.work = r.decode - (dt - tau) / slow_d
                switches.append((tau, r.power[1] - r.power[0]))
            else:
                r.work -= dt / slow_p
        law, idle = self.law, self.law.idle_power_W
        if not switches:
            active = (law.power_W(phase_power / n, n) - idle) * dt
        else:
            active, last = 0.0, 0.0
            for tau, change in sorted(switches):
                active += (law.power_W(phase_power / n, n) - idle) * (tau - last)
                phase_power, last = phase_power + change, tau
            active += (law.power_W(phase_power / n, n) - idle) * (dt - last)
        share = active / n
        for r in run:
            r.energy += share * r.factor

    def _settle(self) -> None:
        """Let finished requests leave, admit waiting ones, and set the timer for the earliest completion."""
        now = self.env.now
        run = self.running
        done = False
        for r in run:
            if r.phase == 0 and r.work <= EPS_S:
                r.phase, r.ttft, r.work = 1, now - r.start, r.decode
                r.plan.ttft_s[r.i, r.j] = r.ttft
            if r.phase == 1 and r.work <= EPS_S:
                r.plan.decode_s[r.i, r.j] = now - r.start - r.ttft
                r.plan.energy_J[r.i, r.j] = r.energy
                done = True
        if done:
            run = self.running = [r for r in run if not (r.phase == 1 and r.work <= EPS_S)]
        while self.waiting and len(run) < self.law.max_batch:
            plan, i, j, x = self.waiting.popleft()
            prompt = float(plan.batch.prompt_tokens[i])
            stretch = self.law.prefill_stretch(self.ttft[x], prompt)
            run.append(_Running(plan, i, j, self.powers[x], prompt, stretch, self._factor(plan, i, j, x), now))
            plan.start_s[i, j] = now
            plan.ttft_s[i, j] = plan.decode_s[i, j] = np.inf
            if run[-1].work <= EPS_S:  # no prefill work (a zero-length ttft)
                r = run[-1]
                r.phase, r.work = 1, r.decode
                plan.ttft_s[i, j] = 0.0
        if not run:
            return
        self.version += 1
        n = len(run)
        context = sum(r.prompt for r in run)
        law = self.law
        delay = min(max(r.work, 0.0) * law.decode_stretch(n, context - r.prompt) if r.phase
                    else max(r.work, 0.0) * r.stretch(n) + r.decode * law.decode_stretch(n, context - r.prompt)
                    for r in run)
        Timeout(self.env, delay, self.version).callbacks.append(self._timer)

    def _factor(self, plan: Plan, i: int, j: int, expert: int) -> float:
        """Sampled batch-1 energy / the profile's batch-1 energy of the same times (1 for the profile service)."""
        p_prefill, p_decode = self.powers[expert]
        idle = self.law.idle_power_W
        nominal = (p_prefill - idle) * plan.ttft_s[i, j] + (p_decode - idle) * plan.decode_s[i, j]
        return float(plan.energy_J[i, j] / nominal) if nominal > 0 else 1.0

    def _timer(self, event: simpy.Event) -> None:
        if event.value != self.version:
            return  # a change since this timer was set has rescheduled
        self._advance()
        self._settle()


class DevicePort:
    """An expert's entrance to a shared device: the engine's per-expert server interface."""

    __slots__ = ("device", "expert")

    def __init__(self, device: BatchedDevice, expert: int):
        self.device, self.expert = device, expert

    @property
    def queued(self) -> int:
        return self.device.queued

    @property
    def done_at(self) -> float:
        """0: a shared device's completions are SimPy events, so the simulation clock already covers them."""
        return 0.0

    def receive(self, reach: float, plan: Plan, i: int, j: int) -> None:
        """Leg (plan, i, j) reaches the device at `reach` (a SimPy event)."""
        env = self.device.env
        Timeout(env, max(reach - env.now, 0.0), (plan, i, j)).callbacks.append(self.arrive)

    def settle(self, until: float) -> None:
        """Nothing to do: arrivals and completions here are SimPy events."""

    def arrive(self, event: simpy.Event) -> None:
        self.device.arrive(event.value, self.expert)
