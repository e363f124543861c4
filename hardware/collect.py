"""`hardware collect` and `hardware fit`: measure a backend on a grid of shapes (or a scenario's
own queries) into a device trace in the schema the simulator replays (traces/README.md), and fit
a device profile to it.

Every new (prompt, output) shape is first run `warmup` times, marked warm=false (the first run of
a shape was 3-6x slower on the H200). Idle power is measured with the meter before the runs, and
active energy = energy − idle power × latency. Without a meter, energy columns are NaN — never 0.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hardware.backends import Backend
from hardware.meters import SampledCounter
from moe2sim.errors import InputError
from moe2sim.devices.concurrency import batching_block
from moe2sim.devices.profiles import DeviceProfile, Sourced, fit_profile


@dataclass(frozen=True)
class Request:
    prompt: str
    prompt_tokens: int
    output_tokens: int
    prompt_id: str = ""


def idle_power(meter: SampledCounter, seconds: float) -> float:
    t0 = meter.now()
    time.sleep(seconds)
    m = meter.measure(t0, meter.now())
    return m.energy_J / m.duration_s


def collect(backend: Backend, requests: list[Request], meter: SampledCounter | None, device: str,
            reps: int = 3, warmup: int = 1, idle_s: float = 2.0, progress=None) -> pd.DataFrame:
    idle_W = idle_power(meter, idle_s) if meter else np.nan
    rows, seen = [], set()
    for req in requests:
        shape = (req.prompt_tokens, req.output_tokens)
        runs = [(False, r) for r in range(warmup)] if shape not in seen else []
        seen.add(shape)
        for warm, rep in runs + [(True, r) for r in range(reps)]:
            t0 = meter.now() if meter else time.perf_counter()
            gen = backend.generate(req.prompt, req.prompt_tokens, req.output_tokens)
            t1 = meter.now() if meter else time.perf_counter()
            m = meter.measure(t0, t1) if meter else None
            latency = gen.ttft_s + gen.decode_s
            energy = m.energy_J if m else np.nan
            rows.append({"device": device, "model": backend.name, "prompt_id": req.prompt_id,
                         "prompt_tokens": gen.prompt_tokens, "output_tokens": gen.output_tokens, "rep": rep,
                         "warm": warm, "ttft_s": gen.ttft_s, "decode_s": gen.decode_s, "latency_s": latency,
                         "energy_J": energy, "active_energy_J": energy - idle_W * latency,
                         "energy_resolution_J": m.resolution_J if m else np.nan, "idle_power_W": idle_W,
                         "meter": m.method if m else "none"})
            if progress:
                progress()
    trace = pd.DataFrame(rows)
    # a shape grid has no prompts to name: no prompt_id column, so replay matches rows by shape
    return trace if any(req.prompt_id for req in requests) else trace.drop(columns="prompt_id")


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


def fit(trace: pd.DataFrame, path: Path, name: str, device: str, assume_power_W: float | None
        ) -> DeviceProfile:
    """Fit a profile on the warm rows; without measured energy, powers must be given and are labelled assumed.
    A trace with several `concurrency` levels gets its batch-1 values from the n = 1 rows and a
    `batching` block fitted to all (moe2sim.devices.concurrency.batching_block)."""
    warm = trace[trace["warm"].astype(bool)] if "warm" in trace.columns else trace
    if warm.empty:
        raise InputError(path, "warm", "no warm rows to fit")
    if "concurrency" in warm.columns and warm["concurrency"].nunique() > 1:
        if not (warm["concurrency"] == 1).any():
            raise InputError(path, "concurrency", "no warm rows at concurrency 1 for the batch-1 values")
        alone = fit(warm[warm["concurrency"] == 1].drop(columns="concurrency"), path, name, device, assume_power_W)
        how = f"fitted by `hardware fit` to {len(warm)} warm rows of {path.name} at concurrency " \
              f"{sorted(int(n) for n in warm['concurrency'].unique())}"
        return alone.model_copy(update={"batching": batching_block(warm, how)})
    how = f"fitted by `hardware fit` to {len(warm)} warm rows of {path.name}"
    measured = warm["active_energy_J"].notna().all() and "idle_power_W" in warm.columns
    if measured:
        idle = Sourced(value=float(warm["idle_power_W"].iloc[0]), provenance="measured",
                       source=f"idle power measured by the collector's meter ({warm['meter'].iloc[0]})")
        return fit_profile(warm, name=name, device=device, model=str(warm["model"].iloc[0]), idle=idle, how=how)
    if assume_power_W is None:
        raise InputError(path, "active_energy_J", "no measured energy (collected without a meter): pass "
                                                  "--assume-power W to fit latency only, with powers labelled assumed")
    assumed = dict(provenance="assumed", source="no energy meter on the collecting machine; given by --assume-power")
    return fit_profile(warm, name=name, device=device, model=str(warm["model"].iloc[0]),
                       idle=Sourced(value=0.0, **assumed), how=how, power=Sourced(value=assume_power_W, **assumed))
