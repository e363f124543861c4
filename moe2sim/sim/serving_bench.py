"""A serving benchmark on one device, as `vllm bench serve --max-concurrency c` or `llama-bench`-style
sweeps run it, through the shared-device fluid model (moe2sim.sim.batched_device).

`requests` equal requests (p prompt, o output tokens) are all sent at t = 0 to a device that runs at most c
at once: FIFO admission keeps c in flight until the queue empties, as a closed loop with c clients does.
    output token throughput = requests · o / makespan                (tok/s, summed over streams)
    mean device power      = P_idle + Σ active energy / makespan     (W, within the profile's boundary)
This is how a profile's batching law is checked against a published concurrency table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import simpy

from moe2sim.devices.batching_law import DeviceLaw
from moe2sim.devices.profiles import DeviceProfile
from moe2sim.sim.batched_device import BatchedDevice


@dataclass
class _Requests:
    """The arrays of a Plan that the shared device reads and writes: one request per row, one leg each."""

    prompt_tokens: np.ndarray
    ttft_s: np.ndarray
    decode_s: np.ndarray
    energy_J: np.ndarray
    start_s: np.ndarray

    @property
    def batch(self) -> "_Requests":
        return self


@dataclass(frozen=True)
class BenchResult:
    output_tokens_per_s: float
    mean_power_W: float
    makespan_s: float
    mean_ttft_s: float


def serving_bench(profile: DeviceProfile, prompt_tokens: int, output_tokens: int, concurrency: int,
                  requests: int = 50) -> BenchResult:
    """Run the benchmark (module docstring) on `profile`'s batching law, at most `concurrency` in flight."""
    law = DeviceLaw.of(profile) or DeviceLaw.time_sharing(1, profile.idle_power_W.value)
    law = dataclasses.replace(law, max_batch=concurrency)
    p = np.full((requests, 1), float(prompt_tokens))
    ttft = profile.ttft_s(p[:, 0])[:, None].copy()
    decode = profile.decode_s(np.full(requests, float(output_tokens)))[:, None].copy()
    plan = _Requests(p[:, 0], ttft, decode, profile.active_energy_J(ttft, decode), np.full((requests, 1), np.nan))
    env = simpy.Environment()
    device = BatchedDevice(env, law, {0: (profile.prefill_power_W.value, profile.decode_power_W.value)},
                           {0: profile.ttft_s})
    for i in range(requests):
        device.arrive((plan, i, 0), 0)
    env.run()
    makespan = float(np.max(plan.start_s + plan.ttft_s + plan.decode_s))
    return BenchResult(requests * output_tokens / makespan,
                       profile.idle_power_W.value + float(plan.energy_J.sum()) / makespan, makespan,
                       float(plan.ttft_s.mean()))
