"""A serving benchmark on one device, as `vllm bench serve --max-concurrency c` or `llama-bench`-style
sweeps run it, through the shared-device fluid model (moe2sim.sim.batched_device).

`requests` equal requests (p prompt, o output tokens) are all sent at t = 0 to a device that runs at most c
at once: FIFO admission keeps c in flight until the queue empties, as a closed loop with c clients does.
    output token throughput = requests · o / makespan                (tok/s, summed over streams)
    mean device power      = P_idle + Σ active energy / makespan     (W, within the profile's boundary)
This is how a profile's batching law is checked against a published concurrency table, and fitted to one:
`one_slowdown` sets β_p = β_d = β (vLLM interleaves prefill chunks with decode steps; a table of two
concurrency levels identifies one parameter), `solve_slowdown` finds the β that gives a published
throughput, and `leave_one_model_out` fits it on every model of a table but one and predicts that one.
With one β for both phases a request's time at n running is (ttft₁ + decode₁)(1 + β(n − 1)) whatever the
split, so a model of the table needs only its concurrency-1 throughput (`scaled_to`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from moe2sim.devices.batching_law import DeviceLaw
from moe2sim.devices.profiles import DeviceProfile, Sourced
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


def one_slowdown(profile: DeviceProfile, beta: float, source: str) -> DeviceProfile:
    """The profile with β_p = β_d = β (`prefill_law: slowdown`), derived as `source` says."""
    value = Sourced(value=round(beta, 6), provenance="derived", source=source)
    batching = profile.batching.model_copy(update={"decode_slowdown": value, "prefill_slowdown": value,
                                                   "prefill_law": "slowdown"})
    return profile.model_copy(update={"batching": batching})


def solve_slowdown(profile: DeviceProfile, prompt_tokens: int, output_tokens: int, concurrency: int,
                   target_tokens_per_s: float, requests: int = 50) -> float:
    """β in [0, 1] at which the benchmark at `concurrency` gives `target_tokens_per_s` (bisection: the
    throughput falls as β grows)."""
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        got = serving_bench(one_slowdown(profile, mid, "trial"), prompt_tokens, output_tokens, concurrency,
                            requests).output_tokens_per_s
        lo, hi = (mid, hi) if got > target_tokens_per_s else (lo, mid)
    return (lo + hi) / 2


def scaled_to(profile: DeviceProfile, prompt_tokens: int, output_tokens: int, tokens_per_s: float) -> DeviceProfile:
    """The profile sped up or slowed down as a whole (both rates ×k, the fixed overhead ÷k) so that its
    concurrency-1 benchmark gives `tokens_per_s`: another model of a table, where only that is known."""
    k = tokens_per_s / serving_bench(profile, prompt_tokens, output_tokens, 1, 1).output_tokens_per_s
    scale = {f: getattr(profile, f).model_copy(update={"value": getattr(profile, f).value * k})
             for f in ("prefill_tokens_per_s", "decode_tokens_per_s")}
    base = profile.ttft_base_s.model_copy(update={"value": profile.ttft_base_s.value / k})
    return profile.model_copy(update=scale | {"ttft_base_s": base})


def leave_one_model_out(table: pd.DataFrame, profile: DeviceProfile, prompt_tokens: int, output_tokens: int,
                        requests: int = 50) -> pd.DataFrame:
    """A published table (model, concurrency, output_tok_s_aggregate; concurrency 1 and one level c above):
    β solved on each model, then each model's throughput at c predicted with the mean β of the others (the
    law) and with β = 0 (independent slots). Concurrency 1 is each model's own anchor, so only c is held out."""
    rows = {m: dict(zip(g["concurrency"].astype(int), g["output_tok_s_aggregate"].astype(float)))
            for m, g in table.groupby("model", sort=False)}
    own = {m: scaled_to(profile, prompt_tokens, output_tokens, x[1]) for m, x in rows.items()}
    beta = {m: solve_slowdown(own[m], prompt_tokens, output_tokens, c, x[c], requests)
            for m, x in rows.items() for c in x if c != 1}
    out = []
    for m, x in rows.items():
        c = max(x)
        others = float(np.mean([b for k, b in beta.items() if k != m]))
        law = serving_bench(one_slowdown(own[m], others, "held out"), prompt_tokens, output_tokens, c, requests)
        slots = serving_bench(one_slowdown(own[m], 0.0, "independent slots"), prompt_tokens, output_tokens, c,
                              requests)
        out.append({"model": m, "concurrency": c, "published": x[c], "beta_own": beta[m], "beta_others": others,
                    "law": law.output_tokens_per_s, "slots": slots.output_tokens_per_s})
    frame = pd.DataFrame(out)
    return frame.assign(law_error_pct=(frame["law"] / frame["published"] - 1) * 100,
                        slots_error_pct=(frame["slots"] / frame["published"] - 1) * 100)
