"""An expert with its own slots: a FIFO G/G/c station settled by the Kiefer–Wolfowitz recursion."""
from __future__ import annotations

import heapq
from typing import Callable

import simpy

from moe2sim.sim.entities import Plan


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
