"""Service models: an expert's time-to-first-token, decode time and active energy for a request.

- ProfileService draws them from a DeviceProfile (the analytic model in profiles.py).
- TraceReplayService replays rows of a device trace: the rows of the same prompt_id when
  the trace has them, else the rows of the nearest (prompt, output) shape in log space;
  one of the matching rows (repetitions) is picked at random.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from moe2sim.errors import InputError
from moe2sim.devices.profiles import DeviceProfile
from moe2sim.data.tables import DEVICE_TRACE_COLUMNS, read_table


@dataclass(frozen=True)
class Service:
    ttft_s: np.ndarray
    decode_s: np.ndarray
    active_energy_J: np.ndarray


class ServiceModel(Protocol):
    def sample(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, prompt_ids: np.ndarray,
               rng: np.random.Generator) -> Service: ...


@dataclass(frozen=True)
class ProfileService:
    profile: DeviceProfile

    def sample(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, prompt_ids: np.ndarray,
               rng: np.random.Generator) -> Service:
        ttft = self.profile.ttft_s(prompt_tokens)
        decode = self.profile.decode_s(output_tokens)
        return Service(ttft, decode, self.profile.active_energy_J(ttft, decode))


class TraceReplayService:
    """Replays measured rows; see the module docstring for how rows are matched."""

    def __init__(self, path: Path, model: str | None):
        try:
            df = read_table(path, DEVICE_TRACE_COLUMNS, "device trace",
                            optional={"warm": "bool", "prompt_id": "string"})
        except InputError as err:
            if err.field != "active_energy_J":
                raise
            raise InputError(path, err.field, f"{err.message}; replay needs measured energy: collect with a meter "
                                              "(--meter nvml|jetson|rapl), or fit a profile with `python -m hardware "
                                              "fit --assume-power W` and use the profile service") from None
        if "warm" in df.columns:
            df = df[df["warm"]]
        if model is not None:
            df = df[df["model"] == model]
            if df.empty:
                raise InputError(path, "model", f"no (warm) rows for model '{model}'")
        self.ttft = df["ttft_s"].to_numpy(float)
        self.decode = df["decode_s"].to_numpy(float)
        self.energy = df["active_energy_J"].to_numpy(float)
        shapes = df[["prompt_tokens", "output_tokens"]].to_numpy(float)
        self.shape_keys, self.shape_of_row = np.unique(shapes, axis=0, return_inverse=True)
        self.log_shapes = np.log(self.shape_keys)
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

    def sample(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, prompt_ids: np.ndarray,
               rng: np.random.Generator) -> Service:
        query = np.log(np.c_[prompt_tokens, output_tokens].astype(float))
        nearest = np.argmin(((query[:, None, :] - self.log_shapes[None]) ** 2).sum(-1), axis=1)
        rows = self._pick(self.rows_by_shape, nearest, rng)
        if len(self.id_keys):
            pos = np.searchsorted(self.id_keys, prompt_ids).clip(0, len(self.id_keys) - 1)
            hit = self.id_keys[pos] == prompt_ids
            if hit.any():
                rows[hit] = self._pick(self.rows_by_id, pos[hit], rng)
        return Service(self.ttft[rows], self.decode[rows], self.energy[rows])
