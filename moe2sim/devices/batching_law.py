"""The shared-device law: how one device serves n requests at once, and what it draws.

With n requests running on a device (any mix of prefill and decode, of any experts placed there):
    decode rate of each request   1 / (τ_d1 · s_d)                    τ_d1 = its batch-1 decode time/token
                                  s_d = 1 + β_d (n − 1) + κ P_o / 1000  P_o = the other running requests'
                                                                      prompt tokens (their KV caches, read
                                                                      at every batched step; κ = 0: no term)
    prefill time of each request  τ_p1 · s_p(n)                       τ_p1 = its batch-1 prefill time, where
        prefill_law "slowdown":   s_p(n) = 1 + β_p (n − 1)
        prefill_law "tokens":     s_p(n) = ttft(n · p) / ttft(p)      the n prefills cost one prefill of n · p
                                                                      tokens under the expert's own TTFT law
                                                                      (p its prompt tokens; no parameter)
    device power                  P(n) = min(P1 + g (n − 1), P_max)
                                  P1 = mean over the running requests of their phase's batch-1 power
    active energy of a request    ∫ (P(n(t)) − P_idle) / n(t) dt over the time it runs, times the ratio
                                  of its sampled batch-1 energy to the profile's (1 for the profile service;
                                  the measured spread or a replayed row's energy otherwise)
At most `max_batch` requests run at once; the others wait in one FIFO queue. At n = 1 this is the
batch-1 profile exactly. β = 0 with g = P1 − P_idle is c independent slots (the SlotServer, used when
a profile has no batching block); β = 1, g = 0 is pure time sharing (processor sharing): a device that
several experts share with no batching block gets this law, with max_batch = the sum of their slots.
The "tokens" law is exact for n equal prompts prefilled as one batch (a static batch); for a mix it
treats the others' prompts as the same length as this one's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from moe2sim.devices.profiles import DeviceProfile, PrefillLaw

# a request's prefill time multiplier as a function of the number running (see the module docstring)
Stretch = Callable[[int], float]


@dataclass(frozen=True)
class DeviceLaw:
    max_batch: int
    beta_decode: float
    beta_prefill: float
    power_growth_W: float
    max_power_W: float     # inf: no cap
    idle_power_W: float
    prefill_law: PrefillLaw = "slowdown"
    kappa_decode: float = 0.0  # κ, per 1,000 prompt tokens of the other running requests

    @classmethod
    def of(cls, profile: DeviceProfile) -> "DeviceLaw | None":
        """The profile's batching law, or None when it has no batching block (independent slots)."""
        b = profile.batching
        if b is None:
            return None
        return cls(b.max_batch, b.decode_slowdown.value, b.prefill_slowdown.value if b.prefill_slowdown else 0.0,
                   b.power_growth_W.value, b.max_power_W.value if b.max_power_W is not None else math.inf,
                   profile.idle_power_W.value, b.prefill_law,
                   b.decode_slowdown_per_kilotoken.value if b.decode_slowdown_per_kilotoken else 0.0)

    @classmethod
    def time_sharing(cls, slots: int, idle_power_W: float) -> "DeviceLaw":
        """No batching gain: n running requests each progress at 1/n of the batch-1 rate, power unchanged."""
        return cls(slots, 1.0, 1.0, 0.0, math.inf, idle_power_W)

    def decode_stretch(self, n: int, others_prompt_tokens: float = 0.0) -> float:
        """s_d: decode time multiplier with n requests running whose other prompts total `others_prompt_tokens`."""
        return 1.0 + self.beta_decode * (n - 1) + self.kappa_decode * others_prompt_tokens / 1000.0

    def prefill_stretch(self, ttft_s: Callable[[np.ndarray], np.ndarray] | None, prompt_tokens: float) -> Stretch:
        """s_p(n) of one request: `ttft_s` is its expert's batch-1 TTFT law (needed by the "tokens" law)."""
        if self.prefill_law == "slowdown":
            beta = self.beta_prefill
            return lambda n: 1.0 + beta * (n - 1)
        if ttft_s is None:
            raise ValueError("the 'tokens' prefill law needs the expert's batch-1 TTFT law")
        own = float(ttft_s(np.array([prompt_tokens], float))[0])
        if own <= 0:
            return lambda n: 1.0
        known: dict[int, float] = {1: 1.0}

        def stretch(n: int) -> float:
            if n not in known:
                known[n] = float(ttft_s(np.array([n * prompt_tokens], float))[0]) / own
            return known[n]
        return stretch

    def power_W(self, mean_phase_power_W: float, n: int) -> float:
        return min(mean_phase_power_W + self.power_growth_W * (n - 1), self.max_power_W)
