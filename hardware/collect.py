"""`hardware collect` and `hardware fit`: measure a backend on a grid of shapes (or a scenario's
own queries) into a device trace in the schema the simulator replays (traces/README.md), and fit
a device profile to it.

Concurrency levels. At level n every request is sent as a wave of n equal copies started together,
and the next wave starts when all n have finished, so n stays n while they run: the trace-row meaning
that moe2sim.devices.concurrency fits. Two ways to keep a wave in flight (IN_FLIGHT, `--in-flight`):
`threads` sends the n requests at once from n threads (a barrier releases them together): what clients
of a server do, so the server must serve n at once (`hardware serve --slots` ≥ the highest level; the
wait a server reports for a slot is kept as `server_queue_s`); `batch` hands them to a local backend as
one batch (HFBackend.generate_batch: one forward pass per step for all n, as a batching server runs them). Order: the warm-up waves of every (request, level) first, then `reps` rounds,
each running every (level, request) once, so slow drift of the machine is shared by all levels
instead of being read as a slowdown of the last one.

Every new (prompt, output) shape at each level is first run `warmup` times, marked warm=false (the
first run of a shape was 3-6x slower on the H200). Idle power is measured with the meter before the
runs (idle_power_W, which active energies subtract) and after them (idle_power_after_W), so a drift shows. Each request's energy is its share of the device's energy (hardware/attribution.py: each
interval's energy split equally among the requests running in it), and its active energy is that
minus idle power × its share of the device's time. Without a meter, energy columns are NaN — never 0.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import pandas as pd

from moe2sim.hardware.attribution import EnergyShares, Share, Span
from moe2sim.hardware.backends import Backend, Generation
from moe2sim.hardware.meters import SampledCounter
from moe2sim.errors import InputError
from moe2sim.devices.concurrency import batching_block
from moe2sim.devices.profiles import DeviceProfile, Sourced, fit_profile, measured_spread

MAX_CONCURRENCY = 4096  # a profile's max_batch bound


@dataclass(frozen=True)
class Request:
    prompt: str
    prompt_tokens: int
    output_tokens: int
    prompt_id: str = ""


@dataclass(frozen=True)
class MeasurementPlan:
    """How `collect` measures: measured repetitions and unmeasured warm-ups per (request shape, level),
    seconds of idle power before the runs, the concurrency levels and how a level's requests are kept in
    flight together (IN_FLIGHT)."""

    reps: int = 3
    warmup: int = 1
    idle_s: float = 2.0
    concurrency: tuple[int, ...] = (1,)
    in_flight: str = "threads"  # a key of IN_FLIGHT


def idle_power(meter: SampledCounter, seconds: float) -> float:
    t0 = meter.now()
    time.sleep(seconds)
    m = meter.measure(t0, meter.now())
    return m.energy_J / m.duration_s


class Waves(Protocol):
    def run(self, req: Request, n: int) -> list[tuple[Generation, Share | None]]:
        """n copies of `req` in flight together; each one's generation and share of the device's energy."""

    def close(self) -> None: ...


class ThreadWaves:
    """n equal requests in flight at once, one thread each: what a client does to a server (or to a local
    backend that serves concurrent calls); each request's energy is its share on the device."""

    def __init__(self, backend: Backend, meter: SampledCounter | None, most: int):
        self.backend = backend
        self.shares = EnergyShares(meter) if meter else None
        self.pool = ThreadPoolExecutor(most, thread_name_prefix="collect")

    def _one(self, req: Request, barrier: threading.Barrier
             ) -> tuple[Generation | None, Span | None, Exception | None]:
        barrier.wait()
        span = self.shares.begin() if self.shares else None
        try:
            return self.backend.generate(req.prompt, req.prompt_tokens, req.output_tokens), span, None
        except Exception as exc:  # noqa: BLE001  re-raised once the whole wave has ended
            return None, span, exc
        finally:
            if self.shares:
                self.shares.stop(span)

    def run(self, req: Request, n: int) -> list[tuple[Generation, Share | None]]:
        barrier = threading.Barrier(n)
        futures = [self.pool.submit(self._one, req, barrier) for _ in range(n)]
        wait(futures)
        done = [f.result() for f in futures]
        shares = [self.shares.energy(span) if self.shares else None for _, span, _ in done]  # read every span
        failed = next((exc for _, _, exc in done if exc is not None), None)
        if failed is not None:
            raise failed
        return [(gen, share) for (gen, _, _), share in zip(done, shares)]

    def close(self) -> None:
        self.pool.shutdown()


class BatchWaves:
    """n equal requests as one batch of a local backend (HFBackend.generate_batch: one forward pass per
    step for all n), each request's energy its share on the device."""

    def __init__(self, backend: Backend, meter: SampledCounter | None, most: int):
        if not hasattr(backend, "generate_batch"):
            raise InputError("--in-flight", "batch", f"{backend.name} cannot batch requests itself: batch needs a "
                                                     "local hf: backend (use threads against a server)")
        self.backend = backend
        self.shares = EnergyShares(meter) if meter else None

    def run(self, req: Request, n: int) -> list[tuple[Generation, Share | None]]:
        spans = [self.shares.begin() for _ in range(n)] if self.shares else [None] * n
        try:
            gens = self.backend.generate_batch(req.prompt, req.prompt_tokens, req.output_tokens, n)
        finally:
            for span in spans if self.shares else []:
                self.shares.stop(span)
        return [(gen, self.shares.energy(span) if self.shares else None) for gen, span in zip(gens, spans)]

    def close(self) -> None:
        pass


# How a wave of n equal requests is kept in flight (`--in-flight`).
IN_FLIGHT: dict[str, Callable[[Backend, SampledCounter | None, int], Waves]] = {"threads": ThreadWaves, "batch": BatchWaves}


def collect(backend: Backend, requests: list[Request], meter: SampledCounter | None, device: str,
            plan: MeasurementPlan = MeasurementPlan()) -> pd.DataFrame:
    waves = IN_FLIGHT[plan.in_flight](backend, meter, max(plan.concurrency))
    idle_W = idle_power(meter, plan.idle_s) if meter else np.nan
    seen: set[tuple[int, int, int]] = set()
    warmups = []
    for n in plan.concurrency:
        for req in requests:
            cell = (req.prompt_tokens, req.output_tokens, n)
            if cell not in seen:
                seen.add(cell)
                warmups += [(False, r, n, req) for r in range(plan.warmup)]
    rounds = [(True, r, n, req) for r in range(plan.reps) for n in plan.concurrency for req in requests]
    rows = []
    try:
        for warm, rep, n, req in warmups + rounds:
            for gen, share in waves.run(req, n):
                latency = gen.ttft_s + gen.decode_s
                energy = share.energy_J if share else np.nan
                rows.append({"device": device, "model": backend.name, "prompt_id": req.prompt_id, "concurrency": n,
                             "prompt_tokens": gen.prompt_tokens, "output_tokens": gen.output_tokens, "rep": rep,
                             "warm": warm, "ttft_s": gen.ttft_s, "decode_s": gen.decode_s, "latency_s": latency,
                             "energy_J": energy,
                             "active_energy_J": energy - idle_W * share.time_s if share else np.nan,
                             "energy_resolution_J": share.resolution_J if share else np.nan, "idle_power_W": idle_W,
                             "meter": share.method if share else "none",
                             "server_queue_s": np.nan if gen.extra.get("queue_s") is None else gen.extra["queue_s"]})
    finally:
        waves.close()
    trace = pd.DataFrame(rows)
    # idle again after the runs: a drift between the two (the H200's idle rose 121 -> 129 W between two days)
    # moves every active energy; active_energy_J keeps the before value, and both are kept
    trace["idle_power_after_W"] = idle_power(meter, plan.idle_s) if meter else np.nan
    # a shape grid has no prompts to name: no prompt_id column, so replay matches rows by shape
    return trace if any(req.prompt_id for req in requests) else trace.drop(columns="prompt_id")


def queued_note(trace: pd.DataFrame, share: float = 0.25) -> str | None:
    """What to say when a server made warm requests of a wave wait for a slot (they did not run together):
    a wait over `share` of the request's latency (a queued request of two equal ones waits about half)."""
    warm = trace[trace["warm"]]
    waited = warm["server_queue_s"] > share * warm["latency_s"]  # NaN (not reported) compares False
    if not waited.any():
        return None
    return (f"{int(waited.sum())} of {len(warm)} warm requests waited over {share:.0%} of their latency for a server "
            f"slot (server_queue_s): their wave was not served together; serve with --slots "
            f"{int(trace['concurrency'].max())} or more")


def concurrency_levels(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8): distinct whole numbers from 1 to MAX_CONCURRENCY, ascending."""
    try:
        levels = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        levels = []
    if not levels or len(set(levels)) != len(levels) or not all(1 <= n <= MAX_CONCURRENCY for n in levels):
        raise InputError("--concurrency", text, f"expected distinct whole numbers from 1 to {MAX_CONCURRENCY:,}, "
                                                "comma-separated, e.g. 1,2,4,8")
    return tuple(sorted(levels))


def shape_grid(text: str) -> list[Request]:
    """'64x32,256x64' -> requests of those (prompt, output) token counts."""
    try:
        pairs = [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        pairs = []
    if not pairs or not all(len(p) == 2 and 0 < p[0] <= 1_000_000 and 0 < p[1] <= 1_000_000 for p in pairs):
        raise InputError("--shapes", text, "expected PROMPTxOUTPUT[,PROMPTxOUTPUT...] of whole numbers from 1 to "
                                           "1,000,000, e.g. 64x32,256x64")
    return [Request("", p, o) for p, o in pairs]


def fit(trace: pd.DataFrame, path: Path, name: str, device: str, assume_power_W: float | None,
        **described) -> DeviceProfile:
    """Fit a profile on the warm rows; without measured energy, powers must be given and are labelled assumed
    (and the energy boundary is `none` unless `described` says otherwise). A trace with several
    `concurrency` levels gets its batch-1 values from the n = 1 rows and a `batching` block fitted to all
    (moe2sim.devices.concurrency.batching_block). Every profile carries the measured repetition spread of
    the warm rows (moe2sim.devices.profiles.measured_spread). `described`: what the profile says it is
    (model, notes, stack, quantisation, power_mode, energy_boundary), taken as given."""
    warm = trace[trace["warm"].astype(bool)] if "warm" in trace.columns else trace
    if warm.empty:
        raise InputError(path, "warm", "no warm rows to fit")
    concurrent = "concurrency" in warm.columns and (warm["concurrency"] != 1).any()
    if concurrent and not (warm["concurrency"] == 1).any():
        raise InputError(path, "concurrency", "no warm rows at concurrency 1 for the batch-1 values")
    alone = warm[warm["concurrency"] == 1] if concurrent else warm
    measured = alone["active_energy_J"].notna().all() and "idle_power_W" in alone.columns
    if not measured and assume_power_W is None:
        raise InputError(path, "active_energy_J", "no measured energy (collected without a meter): pass "
                                                  "--assume-power W to fit latency only, with powers labelled assumed")
    how = f"fitted by `hardware fit` to {len(alone)} warm rows of {path.name}"
    if measured:
        after = (f", {float(alone['idle_power_after_W'].iloc[0]):.2f} W after them"
                 if "idle_power_after_W" in alone.columns and alone["idle_power_after_W"].notna().any() else "")
        idle = Sourced(value=float(alone["idle_power_W"].iloc[0]), provenance="measured", source=(
            f"idle power measured by the collector's meter ({alone['meter'].iloc[0]}) before the runs{after}"))
        profile = fit_profile(alone, name=name, device=device, model=str(alone["model"].iloc[0]), idle=idle, how=how)
    else:
        assumed = dict(provenance="assumed", source="no energy meter on the collecting machine; given by --assume-power")
        profile = fit_profile(alone, name=name, device=device, model=str(alone["model"].iloc[0]),
                              idle=Sourced(value=0.0, **assumed), how=how,
                              power=Sourced(value=assume_power_W, **assumed), energy_boundary="none")
    update = dict(described)
    try:
        update["spread"] = measured_spread(warm, f"{path} warm rows")
    except ValueError:  # one repetition per shape: no spread to state, so the profile states none
        pass
    if concurrent:
        batching = batching_block(warm, f"fitted by `hardware fit` to {len(warm)} warm rows of {path.name} "
                                        f"at concurrency {sorted(int(n) for n in warm['concurrency'].unique())}")
        cap = power_limit(path)
        update["batching"] = batching if cap is None else batching.model_copy(update={"max_power_W": cap})
    return DeviceProfile.model_validate(profile.model_dump() | update)


def power_limit(trace_path: Path) -> Sourced | None:
    """P_max: the device's enforced power limit that `hardware collect` recorded beside the trace
    (`<trace>.device.json`, `power_limit_W` from NVML); None where it recorded none."""
    described = trace_path.with_suffix(".device.json")
    try:
        limit = json.loads(described.read_text(encoding="utf-8")).get("power_limit_W")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(limit, (int, float)) or not limit > 0:
        return None
    return Sourced(value=float(limit), provenance="measured",
                   source=f"enforced power limit recorded by `hardware collect` (NVML) in {described.name}")
