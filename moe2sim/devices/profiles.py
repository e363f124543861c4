"""Device profiles: the latency and power model of one LLM on one device, with provenance.

Model (batch 1, per request):
    ttft(p)   = ttft_base_s + p / prefill_tokens_per_s             (p prompt tokens; ttft_law "additive")
              = max(ttft_base_s, p / prefill_tokens_per_s)         (ttft_law "roofline": a fixed per-request
                overhead, e.g. an eager stack's kernel launches, overlaps the prompt's compute; the slower bounds)
    decode(o) = o / decode_tokens_per_s                             (o output tokens)
    active energy = (prefill_power_W - idle_power_W) * ttft
                  + (decode_power_W  - idle_power_W) * decode
Powers are whole-device draw during the phase, within the profile's `energy_boundary` (module
rails, GPU board or wall plug: energies across boundaries are not comparable); idle power is
charged separately, to every device for the whole run. Every value carries where it came from.

A profile also says what it is: serving `stack`, `quantisation`, `power_mode`. Optional blocks:
- `batching`: how the device serves n requests at once (moe2sim.devices.batching_law): per-request
  decode step τ_d(n) = τ_d(1)·(1 + β_d(n−1) + κ·P_others/1000) (P_others: the other running requests'
  prompt tokens, whose KV caches every batched step reads; κ optional, 0 without), prefill likewise
  with β_p (`prefill_law: slowdown`) or as one prefill of n times the prompt under the TTFT law above
  (`prefill_law: tokens`), device power
  P(n) = min(P(1) + g·(n−1), P_max), at most `max_batch` requests at once. Without it the
  expert's slots are independent servers (the special case β = 0, g = P(1) − P_idle).
- `spread`: repetition spread (coefficients of variation of latency and power) the simulator
  can draw as multiplicative lognormal noise (scenario `service_noise`).
- `fit_grid`: the prompt and output lengths a fitted profile was measured on; runs warn outside it.
"""
from __future__ import annotations

from pathlib import Path
import warnings
from typing import Annotated, Callable, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moe2sim.data.atomic import write_text_atomic
from moe2sim.errors import InputError, from_validation

Provenance = Literal["measured", "published", "derived", "assumed"]
Stack = Literal["llama.cpp", "mlc", "vllm", "transformers", "tensorrt-llm"]
EnergyBoundary = Literal["module", "gpu", "wall", "none"]   # none: no meter (latency-only profile)
TtftLaw = Literal["additive", "roofline"]
PrefillLaw = Literal["slowdown", "tokens"]   # how prefill slows with n running (moe2sim.devices.batching_law)

# time to first token (s) from (ttft_base_s, prefill_tokens_per_s, prompt tokens): see the module docstring
TTFT_LAWS: dict[str, Callable[[float, float, np.ndarray], np.ndarray]] = {
    "additive": lambda base, rate, p: base + p / rate,
    "roofline": lambda base, rate, p: np.maximum(base, p / rate),
}


class Sourced(BaseModel):
    """A number and where it came from: measured (how, on what), published (citation), derived (how)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    value: float = Field(ge=0)
    provenance: Provenance
    source: str = Field(min_length=1)


# the range of each value a profile may hold (rates in tokens/s, times in s, powers in W)
PHYSICAL = {"ttft_base_s": (0.0, 1e6), "prefill_tokens_per_s": (1e-3, 1e15), "decode_tokens_per_s": (1e-3, 1e15),
            "prefill_power_W": (0.0, 1e7), "decode_power_W": (0.0, 1e7), "idle_power_W": (0.0, 1e7)}
# the range of each batching value: slowdowns per extra request (κ per 1,000 prompt tokens), powers in W
BATCHING_PHYSICAL = {"decode_slowdown": (0.0, 100.0), "decode_slowdown_per_kilotoken": (0.0, 100.0),
                     "prefill_slowdown": (0.0, 100.0), "power_growth_W": (0.0, 1e5), "max_power_W": (0.0, 1e7)}


class Batching(BaseModel):
    """The shared-device law (see the module docstring): slowdowns β_d, β_p (dimensionless, per extra
    running request), power growth g (W per extra request) and the power cap P_max (W, whole device).
    `prefill_law` "tokens" replaces β_p by the profile's own TTFT law at n times the prompt; κ
    (`decode_slowdown_per_kilotoken`, optional) adds to β_d(n−1) for the other requests' contexts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    max_batch: Annotated[int, Field(ge=1, le=4096)]
    decode_slowdown: Sourced
    decode_slowdown_per_kilotoken: Sourced | None = Field(
        None, description="κ: more decode slowdown per 1,000 prompt tokens of the other running requests")
    prefill_law: PrefillLaw = "slowdown"
    prefill_slowdown: Sourced | None = None
    power_growth_W: Sourced
    max_power_W: Sourced | None = None

    @model_validator(mode="after")
    def _prefill(self) -> "Batching":
        for f, (low, high) in BATCHING_PHYSICAL.items():  # beyond these the fluid model's speeds underflow
            value = getattr(self, f)
            if value is not None and not low <= value.value <= high:
                raise ValueError(f"{f} = {value.value:g} is outside [{low:g}, {high:g}]")
        if self.prefill_law == "slowdown" and self.prefill_slowdown is None:
            raise ValueError("prefill_slowdown is required with prefill_law 'slowdown'")
        if self.prefill_law == "tokens" and self.prefill_slowdown is not None:
            raise ValueError("prefill_slowdown is not used with prefill_law 'tokens': remove it")
        return self


class Spread(BaseModel):
    """Repetition spread of one shape: coefficient of variation of latency and of device power."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    latency_cv: Sourced
    power_cv: Sourced
    drift: str = Field("", description="day-to-day drift, where collected on more than one day")


class FitGrid(BaseModel):
    """The measured range of a fitted profile: [min, max] prompt and output tokens of its trace."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    prompt_tokens: tuple[float, float]
    output_tokens: tuple[float, float]

    def outside(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> str | None:
        """A message naming the lengths outside the grid, or None when all lie inside."""
        out = []
        for what, lo_hi, x in (("prompt", self.prompt_tokens, prompt_tokens), ("output", self.output_tokens,
                                                                                output_tokens)):
            x = np.asarray(x, float)
            if len(x) and (x.min() < lo_hi[0] or x.max() > lo_hi[1]):
                out.append(f"{what} tokens {x.min():.0f}–{x.max():.0f} outside the measured {lo_hi[0]:.0f}–{lo_hi[1]:.0f}")
        return "; ".join(out) or None


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    device: str
    model: str = Field(description="the LLM shape this profile was taken for")
    notes: str = ""
    ttft_base_s: Sourced
    prefill_tokens_per_s: Sourced
    ttft_law: TtftLaw = Field("additive", description="how the base and the prompt's prefill combine")
    decode_tokens_per_s: Sourced
    prefill_power_W: Sourced
    decode_power_W: Sourced
    idle_power_W: Sourced
    stack: Stack | None = Field(None, description="serving stack; None: unstated")
    quantisation: str | None = Field(None, description="weight format, e.g. bf16, q4_0, W4A16")
    power_mode: str | None = Field(None, description="device power mode, e.g. MAXN, default")
    energy_boundary: EnergyBoundary | None = Field(None, description="what the powers cover; None: unstated")
    batching: Batching | None = None
    spread: Spread | None = None
    fit_grid: FitGrid | None = None
    fit_error: dict[str, float] | None = Field(None, description="fit residuals, when fitted from a trace")

    @model_validator(mode="after")
    def _physical(self) -> "DeviceProfile":
        for f in ("prefill_tokens_per_s", "decode_tokens_per_s", "prefill_power_W", "decode_power_W"):
            if getattr(self, f).value <= 0:
                raise ValueError(f"{f} must be positive")
        for f, (low, high) in PHYSICAL.items():  # beyond these, simulated times or energies overflow
            if not low <= getattr(self, f).value <= high:
                raise ValueError(f"{f} = {getattr(self, f).value:g} is outside [{low:g}, {high:g}]")
        idle = self.idle_power_W.value
        for f in ("prefill_power_W", "decode_power_W"):
            if getattr(self, f).value < idle:
                raise ValueError(f"{f} ({getattr(self, f).value} W) is below idle_power_W ({idle} W)")
        cap = self.batching.max_power_W if self.batching else None
        if cap is not None and cap.value < max(self.prefill_power_W.value, self.decode_power_W.value):
            raise ValueError(f"batching.max_power_W ({cap.value} W) is below the batch-1 phase powers")
        return self

    @property
    def boundary(self) -> str:
        return self.energy_boundary or "unstated"

    def warn_outside_grid(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, what: str) -> bool:
        """Warn (UserWarning) when lengths lie outside the fitted grid; returns whether it warned."""
        message = self.fit_grid.outside(prompt_tokens, output_tokens) if self.fit_grid else None
        if message:
            warnings.warn(f"profile {self.name} used {what}: {message} (extrapolated)", stacklevel=3)
        return message is not None

    def ttft_s(self, prompt_tokens: np.ndarray) -> np.ndarray:
        return TTFT_LAWS[self.ttft_law](self.ttft_base_s.value, self.prefill_tokens_per_s.value,
                                        np.asarray(prompt_tokens, float))

    def decode_s(self, output_tokens: np.ndarray) -> np.ndarray:
        return np.asarray(output_tokens, float) / self.decode_tokens_per_s.value

    def active_energy_J(self, ttft_s: np.ndarray, decode_s: np.ndarray) -> np.ndarray:
        idle = self.idle_power_W.value
        return (self.prefill_power_W.value - idle) * ttft_s + (self.decode_power_W.value - idle) * decode_s


def load_profile(path: Path) -> DeviceProfile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "device profile file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"not UTF-8 text (byte {exc.start}): a profile is a YAML text file") from None
    except yaml.YAMLError as exc:
        raise InputError(path, None, f"malformed YAML: {exc}") from None
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(path, exc) from None


def save_profile(profile: DeviceProfile, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(profile.model_dump(exclude_none=True), sort_keys=False, width=100))


def fit_profile(trace: pd.DataFrame, *, name: str, device: str, model: str, idle: Sourced,
                how: str, power: Sourced | None = None, **described) -> DeviceProfile:
    """Relative-error least-squares fit of the profile model to warm rows of a device trace.

    ttft_s = a + p / r_prefill or max(a, p / r_prefill);  decode_s = o / r_decode;
    active_energy_J = P_act * (ttft + decode), so prefill and decode share one active power: the trace's
    meter (NVML, ~100 ms steps) cannot separate a prefill of a few ms. Residuals are weighted by 1/observed
    (the fit minimises squared relative error, matching the % error it reports). Both TTFT laws have two
    parameters; the roofline one is kept only where its error is ROOFLINE_GAIN of the additive one's or
    less (e.g. a GPU eager stack's launch floor), else the additive default (e.g. a CPU, where overhead
    and compute run one after the other). fit_error holds the in-sample errors, fit_grid the
    measured length range (runs warn outside it). A trace without measured energy fits the latency only;
    its prefill and decode power is then `power`. `described`: stack, quantisation, power_mode,
    energy_boundary, spread, batching of the profile.
    """
    p = trace["prompt_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    ttft = trace["ttft_s"].to_numpy(float)
    dec = trace["decode_s"].to_numpy(float)
    additive, roofline = fit_ttft_additive(p, ttft), fit_ttft_roofline(p, ttft)
    sse = {law: relative_sse(TTFT_LAWS[law](a, 1.0 / inv, p), ttft) for law, a, inv in (additive, roofline)}
    law, a, inv_prefill = roofline if sse["roofline"] < ROOFLINE_GAIN * sse["additive"] else additive
    inv_decode = float(np.sum(o / dec) / np.sum((o / dec) ** 2))
    fitted = dict(provenance="derived", source=how)
    if power is None:
        busy, active = ttft + dec, trace["active_energy_J"].to_numpy(float)
        if not np.isfinite(active).all():
            raise ValueError("the trace has no measured energy for some rows: give the power to assume")
        p_active = max(float(np.sum(busy / active) / np.sum((busy / active) ** 2)), 0.0)
        power = Sourced(value=idle.value + p_active, **fitted)
    profile = DeviceProfile(
        name=name, device=device, model=model, notes=f"fitted on {len(trace)} warm rows",
        ttft_base_s=Sourced(value=a, **fitted),
        prefill_tokens_per_s=Sourced(value=1.0 / inv_prefill, **fitted),
        ttft_law=law,
        decode_tokens_per_s=Sourced(value=1.0 / inv_decode, **fitted),
        prefill_power_W=power,
        decode_power_W=power,
        idle_power_W=idle,
        fit_grid=FitGrid(prompt_tokens=(float(p.min()), float(p.max())), output_tokens=(float(o.min()), float(o.max()))),
        **described,
    )
    return profile.model_copy(update={"fit_error": profile_error(profile, trace)})


def relative_sse(pred: np.ndarray, real: np.ndarray) -> float:
    return float(np.sum(((pred - real) / real) ** 2))


def fit_ttft_additive(p: np.ndarray, ttft: np.ndarray) -> tuple[str, float, float]:
    """("additive", a, 1/r) minimising Σ((a + p/r − t)/t)², a ≥ 0 (a linear least-squares problem)."""
    (a, inv_rate), *_ = np.linalg.lstsq(np.c_[np.ones_like(p), p] / ttft[:, None], np.ones_like(p), rcond=None)
    return "additive", max(float(a), 0.0), max(float(inv_rate), 1e-9)


ROOFLINE_RISE = 1.25  # a compute line must rise this far above the floor inside the grid (TTFT jitter is ~7 %)
ROOFLINE_GAIN = 0.8   # the roofline law replaces the default additive one only when it cuts the error by 20 %


def fit_ttft_roofline(p: np.ndarray, ttft: np.ndarray, points: int = 96) -> tuple[str, float, float]:
    """("roofline", a, 1/r) minimising Σ((max(a, p/r) − t)/t)²: a log grid over (a, 1/r) spanning the
    observed times and time-per-token ratios, refined once around its best cell. A line that crosses the
    floor inside the grid must reach ROOFLINE_RISE × a at the longest prompt: a rise smaller than that is
    jitter on the floor, and a line fitted to it would extrapolate noise."""
    p_max = float(p.max())
    a_lo, a_hi = float(ttft.min()) / 2, float(ttft.max())
    ratio = ttft / np.maximum(p, 1.0)
    s_lo, s_hi = float(ratio.min()) / 10, float(ratio.max()) * 2
    best = (np.inf, a_lo, s_lo)
    for _ in range(2):
        a_grid, s_grid = np.geomspace(a_lo, a_hi, points), np.geomspace(s_lo, s_hi, points)
        for a in a_grid:
            pred = np.maximum(a, s_grid[:, None] * p[None, :])
            sse = (((pred - ttft) / ttft) ** 2).sum(axis=1)
            top = s_grid * p_max
            sse[(top > a) & (top < ROOFLINE_RISE * a)] = np.inf
            i = int(np.argmin(sse))
            if sse[i] < best[0]:
                best = (float(sse[i]), float(a), float(s_grid[i]))
        step_a, step_s = (a_hi / a_lo) ** (1 / (points - 1)), (s_hi / s_lo) ** (1 / (points - 1))
        a_lo, a_hi, s_lo, s_hi = best[1] / step_a, best[1] * step_a, best[2] / step_s, best[2] * step_s
    return "roofline", best[1], best[2]


def measured_spread(trace: pd.DataFrame, how: str) -> Spread:
    """Repetition spread of a device trace: the median over shapes (and concurrency levels) of the
    coefficient of variation (sample sd / mean) of a row's latency, and of its device power
    energy_J / latency (whole device; active power where the trace has no energy_J). Shapes with one
    row are skipped; a trace without energy gets power_cv 0, labelled assumed."""
    t = trace.assign(latency=trace["ttft_s"] + trace["decode_s"])
    energy = t["energy_J"] if "energy_J" in t.columns else t["active_energy_J"]
    t = t.assign(power=energy / t["latency"])
    keys = [k for k in ("prompt_tokens", "output_tokens", "concurrency") if k in t.columns]
    groups = t.groupby(keys)
    cv = (groups[["latency", "power"]].std(ddof=1) / groups[["latency", "power"]].mean()).dropna(subset=["latency"])
    if cv.empty:
        raise ValueError("no shape with two or more rows: the spread needs repetitions")
    source = f"{how}: median over {len(cv)} shapes of sd/mean of the repetitions"
    power = cv["power"].dropna()
    power_cv = (Sourced(value=round(float(power.median()), 4), provenance="measured", source=source) if len(power)
                else Sourced(value=0.0, provenance="assumed", source=f"{how}: no energy measured"))
    return Spread(latency_cv=Sourced(value=round(float(cv["latency"].median()), 4), provenance="measured",
                                     source=source), power_cv=power_cv)


def profile_error(profile: DeviceProfile, trace: pd.DataFrame) -> dict[str, float]:
    """Mean absolute % error of the profile's latency and (where the trace measured it) active energy
    on the rows of a device trace."""
    ttft = profile.ttft_s(trace["prompt_tokens"].to_numpy())
    dec = profile.decode_s(trace["output_tokens"].to_numpy())
    real_latency = trace["ttft_s"].to_numpy(float) + trace["decode_s"].to_numpy(float)
    real_energy = trace["active_energy_J"].to_numpy(float)

    def mape(pred: np.ndarray, real: np.ndarray) -> float:
        return round(float(np.mean(np.abs(pred - real) / real) * 100), 2)

    errors = {"latency_mape_pct": mape(ttft + dec, real_latency),
              "ttft_mape_pct": mape(ttft, trace["ttft_s"].to_numpy(float))}
    if np.isfinite(real_energy).all():
        errors["active_energy_mape_pct"] = mape(profile.active_energy_J(ttft, dec), real_energy)
    return errors | {"rows": float(len(trace))}
