"""Service models: an expert's time-to-first-token, decode time and active energy for a request.

- ProfileService draws them from a DeviceProfile (the analytic model in profiles.py).
- TraceReplayService replays rows of a device trace: the rows of the same prompt_id when
  the trace has them, else the rows of the nearest (prompt, output) shape in log space;
  one of the matching rows (repetitions) is picked at random, then rescaled to the query's
  shape by a profile fitted to the trace (fit_profile), per quantity q in ttft, decode, energy:
      q(query) = q(row) · q_fit(query shape) / q_fit(row shape)
  so a measured shape replays its own rows (ratio 1) and no other shape is returned unscaled.
- NoisyService multiplies another model's draws by lognormal noise of mean 1 from a profile's
  spread: time × L, energy × L·W, with L ~ LN(−s_L²/2, s_L²), s_L² = ln(1 + cv_latency²), W likewise.
Lengths outside the measured grid (a fitted profile's fit_grid, a trace's shapes) raise one
UserWarning per service.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from moe2sim.errors import InputError
from moe2sim.devices.profiles import DeviceProfile, Sourced, Spread, fit_profile
from moe2sim.data.tables import DEVICE_TRACE_COLUMNS, read_table


@dataclass(frozen=True)
class Service:
    ttft_s: np.ndarray
    decode_s: np.ndarray
    active_energy_J: np.ndarray


class ServiceModel(Protocol):
    def sample(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, prompt_ids: np.ndarray,
               rng: np.random.Generator) -> Service: ...


@dataclass
class ProfileService:
    profile: DeviceProfile
    warned: bool = field(default=False, compare=False)

    def sample(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, prompt_ids: np.ndarray,
               rng: np.random.Generator) -> Service:
        if not self.warned:
            self.warned = self.profile.warn_outside_grid(prompt_tokens, output_tokens, "in a run")
        ttft = self.profile.ttft_s(prompt_tokens)
        decode = self.profile.decode_s(output_tokens)
        return Service(ttft, decode, self.profile.active_energy_J(ttft, decode))


def lognormal_sigma(cv: float) -> float:
    return float(np.sqrt(np.log1p(cv * cv)))


@dataclass
class NoisyService:
    """Another service model with a profile's repetition spread drawn on top (module docstring)."""

    inner: ServiceModel
    spread: Spread

    def sample(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, prompt_ids: np.ndarray,
               rng: np.random.Generator) -> Service:
        svc = self.inner.sample(prompt_tokens, output_tokens, prompt_ids, rng)
        s_l, s_w = lognormal_sigma(self.spread.latency_cv.value), lognormal_sigma(self.spread.power_cv.value)
        z = rng.standard_normal((2, len(svc.ttft_s)))
        time = np.exp(s_l * z[0] - s_l * s_l / 2)
        power = np.exp(s_w * z[1] - s_w * s_w / 2)
        return Service(svc.ttft_s * time, svc.decode_s * time, svc.active_energy_J * time * power)


class TraceReplayService:
    """Replays measured rows, rescaled to the query's shape; see the module docstring."""

    def __init__(self, path: Path, model: str | None):
        try:
            df = read_table(path, DEVICE_TRACE_COLUMNS, "device trace",
                            optional={"warm": "bool", "prompt_id": "string"})
        except InputError as err:
            if err.field != "active_energy_J":
                raise
            raise InputError(path, err.field, f"{err.message}; replay needs measured energy: collect with a meter "
                                              "(--meter nvml|jetson|rapl), or fit a profile with `python -m moe2sim.hardware "
                                              "fit --assume-power W` and use the profile service") from None
        if "warm" in df.columns:
            df = df[df["warm"]]
        if model is not None:
            df = df[df["model"] == model]
            if df.empty:
                raise InputError(path, "model", f"no (warm) rows for model '{model}'")
        self.path = path
        self.fit = fit_profile(df, name=f"replay:{path.name}", device="", model=model or "all",
                               idle=Sourced(value=0.0, provenance="derived", source="replay: active energy only"),
                               how=f"fit to {path.name} for replay rescaling")
        self.warned = False
        self.ttft = df["ttft_s"].to_numpy(float)
        self.decode = df["decode_s"].to_numpy(float)
        self.energy = df["active_energy_J"].to_numpy(float)
        shapes = df[["prompt_tokens", "output_tokens"]].to_numpy(float)
        self.shape_keys, self.shape_of_row = np.unique(shapes, axis=0, return_inverse=True)
        self.log_shapes = np.log(self.shape_keys)
        self.prompt_of_row = shapes[:, 0]
        self.output_of_row = shapes[:, 1]
        self.rows_by_shape = self._groups(self.shape_of_row)
        if "prompt_id" in df.columns:
            ids = df["prompt_id"].astype(str).to_numpy()
            self.id_keys, id_of_row = np.unique(ids, return_inverse=True)
            self.rows_by_id = self._groups(id_of_row)
        else:
            self.id_keys = np.array([], dtype=str)

    @staticmethod
    def _groups(group_of_row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(group_of_row, kind="stable")
        counts = np.bincount(group_of_row)
        return order, np.concatenate(([0], np.cumsum(counts)[:-1])), counts

    @staticmethod
    def _pick(groups: tuple[np.ndarray, np.ndarray, np.ndarray], g: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
        order, start, counts = groups
        return order[start[g] + (rng.random(len(g)) * counts[g]).astype(np.int64)]

    def predict(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> tuple[np.ndarray, ...]:
        """The fitted profile's (ttft, decode, active energy) of the given shapes."""
        ttft, dec = self.fit.ttft_s(prompt_tokens), self.fit.decode_s(output_tokens)
        return ttft, dec, self.fit.active_energy_J(ttft, dec)

    def sample(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, prompt_ids: np.ndarray,
               rng: np.random.Generator) -> Service:
        if not self.warned:
            self.warned = self.fit.warn_outside_grid(prompt_tokens, output_tokens, f"to replay {self.path.name}")
        query = np.log(np.c_[prompt_tokens, output_tokens].astype(float))
        nearest = np.argmin(((query[:, None, :] - self.log_shapes[None]) ** 2).sum(-1), axis=1)
        rows = self._pick(self.rows_by_shape, nearest, rng)
        if len(self.id_keys):
            pos = np.searchsorted(self.id_keys, prompt_ids).clip(0, len(self.id_keys) - 1)
            hit = self.id_keys[pos] == prompt_ids
            if hit.any():
                rows[hit] = self._pick(self.rows_by_id, pos[hit], rng)
        want = self.predict(prompt_tokens, output_tokens)
        have = self.predict(self.prompt_of_row[rows], self.output_of_row[rows])
        ttft, dec, energy = (m[rows] * w / h for m, w, h in zip((self.ttft, self.decode, self.energy), want, have))
        return Service(ttft, dec, energy)
