"""Device profiles: the latency and power model of one LLM on one device, with provenance.

Model (batch 1, per request):
    ttft(p)   = ttft_base_s + p / prefill_tokens_per_s             (p prompt tokens)
    decode(o) = o / decode_tokens_per_s                             (o output tokens)
    active energy = (prefill_power_W - idle_power_W) * ttft
                  + (decode_power_W  - idle_power_W) * decode
Powers are whole-device draw during the phase; idle power is charged separately, to
every device for the whole run. Every value carries where it came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moe2sim.data.atomic import write_text_atomic
from moe2sim.errors import InputError, from_validation

Provenance = Literal["measured", "published", "derived", "assumed"]


class Sourced(BaseModel):
    """A number and where it came from: measured (how, on what), published (citation), derived (how)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    value: float = Field(ge=0)
    provenance: Provenance
    source: str = Field(min_length=1)


# the range of each value a profile may hold (rates in tokens/s, times in s, powers in W)
PHYSICAL = {"ttft_base_s": (0.0, 1e6), "prefill_tokens_per_s": (1e-3, 1e15), "decode_tokens_per_s": (1e-3, 1e15),
            "prefill_power_W": (0.0, 1e7), "decode_power_W": (0.0, 1e7), "idle_power_W": (0.0, 1e7)}


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    device: str
    model: str = Field(description="the LLM shape this profile was taken for")
    notes: str = ""
    ttft_base_s: Sourced
    prefill_tokens_per_s: Sourced
    decode_tokens_per_s: Sourced
    prefill_power_W: Sourced
    decode_power_W: Sourced
    idle_power_W: Sourced
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
        return self

    def ttft_s(self, prompt_tokens: np.ndarray) -> np.ndarray:
        return self.ttft_base_s.value + np.asarray(prompt_tokens, float) / self.prefill_tokens_per_s.value

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
                how: str, power: Sourced | None = None) -> DeviceProfile:
    """Relative-error least-squares fit of the profile model to warm rows of a device trace.

    ttft_s = a + p / r_prefill;  decode_s = o / r_decode;  active_energy_J = P_act * (ttft + decode),
    so prefill and decode share one active power: the trace's meter (NVML, ~100 ms steps) cannot
    separate a prefill of a few ms. Residuals are weighted by 1/observed (the fit minimises squared
    relative error, matching the % error it reports). fit_error holds the in-sample errors. A trace
    without measured energy fits the latency only; its prefill and decode power is then `power`.
    """
    p = trace["prompt_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    ttft = trace["ttft_s"].to_numpy(float)
    dec = trace["decode_s"].to_numpy(float)
    (a, inv_prefill), *_ = np.linalg.lstsq(np.c_[np.ones_like(p), p] / ttft[:, None], np.ones_like(p), rcond=None)
    a, inv_prefill = max(float(a), 0.0), max(float(inv_prefill), 1e-9)
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
        decode_tokens_per_s=Sourced(value=1.0 / inv_decode, **fitted),
        prefill_power_W=power,
        decode_power_W=power,
        idle_power_W=idle,
    )
    return profile.model_copy(update={"fit_error": profile_error(profile, trace)})


def profile_error(profile: DeviceProfile, trace: pd.DataFrame) -> dict[str, float]:
    """Mean absolute % error of the profile's latency and (where the trace measured it) active energy
    on the rows of a device trace."""
    ttft = profile.ttft_s(trace["prompt_tokens"].to_numpy())
    dec = profile.decode_s(trace["output_tokens"].to_numpy())
    real_latency = trace["ttft_s"].to_numpy(float) + trace["decode_s"].to_numpy(float)
    real_energy = trace["active_energy_J"].to_numpy(float)

    def mape(pred: np.ndarray, real: np.ndarray) -> float:
        return round(float(np.mean(np.abs(pred - real) / real) * 100), 2)

    errors = {"latency_mape_pct": mape(ttft + dec, real_latency)}
    if np.isfinite(real_energy).all():
        errors["active_energy_mape_pct"] = mape(profile.active_energy_J(ttft, dec), real_energy)
    return errors | {"rows": float(len(trace))}
