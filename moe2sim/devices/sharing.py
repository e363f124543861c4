"""The shared-device law: how one device serves n requests at once, and what it draws.

With n requests running on a device (any mix of prefill and decode, of any experts placed there):
    decode rate of each request   1 / (τ_d1 · (1 + β_d (n − 1)))     τ_d1 = its batch-1 decode time/token
    prefill rate of each request  1 / (τ_p1 · (1 + β_p (n − 1)))     likewise for its prompt
    device power                  P(n) = min(P1 + g (n − 1), P_max)
                                  P1 = mean over the running requests of their phase's batch-1 power
    active energy of a request    ∫ (P(n(t)) − P_idle) / n(t) dt over the time it runs, times the ratio
                                  of its sampled batch-1 energy to the profile's (1 for the profile service;
                                  the measured spread or a replayed row's energy otherwise)
At most `max_batch` requests run at once; the others wait in one FIFO queue. At n = 1 this is the
batch-1 profile exactly. β = 0 with g = P1 − P_idle is c independent slots (the SlotServer, used when
a profile has no batching block); β = 1, g = 0 is pure time sharing (processor sharing): a device that
several experts share with no batching block gets this law, with max_batch = the sum of their slots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from moe2sim.devices.profiles import DeviceProfile


@dataclass(frozen=True)
class DeviceLaw:
    max_batch: int
    beta_decode: float
    beta_prefill: float
    power_growth_W: float
    max_power_W: float     # inf: no cap
    idle_power_W: float

    @classmethod
    def of(cls, profile: DeviceProfile) -> "DeviceLaw | None":
        """The profile's batching law, or None when it has no batching block (independent slots)."""
        b = profile.batching
        if b is None:
            return None
        return cls(b.max_batch, b.decode_slowdown.value, b.prefill_slowdown.value, b.power_growth_W.value,
                   b.max_power_W.value if b.max_power_W is not None else math.inf, profile.idle_power_W.value)

    @classmethod
    def time_sharing(cls, slots: int, idle_power_W: float) -> "DeviceLaw":
        """No batching gain: n running requests each progress at 1/n of the batch-1 rate, power unchanged."""
        return cls(slots, 1.0, 1.0, 0.0, math.inf, idle_power_W)

    def slowdowns(self, n: int) -> tuple[float, float]:
        """(prefill, decode) time multipliers with n requests running."""
        return 1.0 + self.beta_prefill * (n - 1), 1.0 + self.beta_decode * (n - 1)

    def power_W(self, mean_phase_power_W: float, n: int) -> float:
        return min(mean_phase_power_W + self.power_growth_W * (n - 1), self.max_power_W)
