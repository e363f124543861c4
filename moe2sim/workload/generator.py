"""Workload: when queries arrive, of which category, with which prompt and output length.

Arrival processes (all seeded, generated in chunks so memory stays flat):
- poisson:  exponential gaps at rate λ;
- diurnal:  non-homogeneous Poisson with λ(t) = λ̄ (1 + a sin(2π (t - φ)/P)), by thinning
            (Lewis & Shedler 1979) from a homogeneous process at λ̄ (1 + a);
- replay:   timestamps (and optionally categories, prompt and output tokens) read from a file, in
            moe2sim's columns or a production trace's format (REPLAY_FORMATS).
Each arrival draws its category by the scenario mix (unless replayed), a prompt of that
category uniformly from the trace split, its prompt length from the trace (or a stated
distribution) and its output length from the category's distribution — or, replaying a file with
token counts, each request's own prompt and output length (its prompt's outcome still drawn from the
category's prompts: the length does not change which experts answer it right).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from moe2sim.errors import InputError
from moe2sim.scenario.schema import MAX_QUERIES, MAX_VALUE, Bursts, Diurnal, FixedTokens, GeometricTokens, LognormalTokens, Poisson, Replay, Scenario
from moe2sim.data.quality import QualityData
from moe2sim.data.tables import read_table

CHUNK = 8192
MAX_TIME_S = MAX_VALUE  # a replayed arrival time (after time_scale): as any scenario number
BYTES_PER_TOKEN = 4.0  # assumed: ~4 UTF-8 bytes of English text per token (output, synthetic prompts)


@dataclass
class QueryBatch:
    """Consecutive arrivals, as columns. `prompt` indexes rows of QualityData.prompts."""

    arrival_s: np.ndarray
    category: np.ndarray
    prompt: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prompt_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def output_bytes(self) -> np.ndarray:
        return self.output_tokens * BYTES_PER_TOKEN

    def take(self, index: slice | np.ndarray) -> "QueryBatch":
        return QueryBatch(self.arrival_s[index], self.category[index], self.prompt[index],
                          self.prompt_tokens[index], self.output_tokens[index], self.prompt_bytes[index])


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop indices of the runs of equal consecutive labels."""
    cut = np.flatnonzero(np.diff(labels)) + 1
    return np.r_[0, cut], np.r_[cut, len(labels)]


def _poisson_times(rate: float, rng: np.random.Generator) -> Iterator[np.ndarray]:
    t = 0.0
    while True:
        times = t + np.cumsum(rng.exponential(1.0 / rate, CHUNK))
        t = float(times[-1])
        yield times


class _BurstClock:
    """On/off burst periods with exponential durations, generated lazily as time advances."""

    def __init__(self, bursts: Bursts, rng: np.random.Generator):
        self.bursts, self.rng = bursts, rng
        self.edges = [0.0]  # alternating gap/burst boundaries, starting in a gap

    def factor(self, times: np.ndarray) -> np.ndarray:
        while self.edges[-1] <= times[-1]:
            mean = self.bursts.mean_gap_s if len(self.edges) % 2 else self.bursts.mean_duration_s
            self.edges.append(self.edges[-1] + self.rng.exponential(mean))
        in_burst = np.searchsorted(self.edges, times, side="right") % 2 == 0
        return np.where(in_burst, self.bursts.factor, 1.0)


def _diurnal_times(cfg: Diurnal, rng: np.random.Generator) -> Iterator[np.ndarray]:
    burst_factor = cfg.bursts.factor if cfg.bursts else 1.0
    clock = _BurstClock(cfg.bursts, np.random.default_rng(rng.integers(2**63))) if cfg.bursts else None
    peak = cfg.mean_rate_per_s * (1 + cfg.amplitude) * burst_factor
    for times in _poisson_times(peak, rng):
        rate = cfg.mean_rate_per_s * (1 + cfg.amplitude * np.sin(2 * np.pi * (times - cfg.phase_s) / cfg.period_s))
        if clock is not None:
            rate = rate * clock.factor(times)
        keep = rng.random(len(times)) * peak < rate
        yield times[keep]


@dataclass(frozen=True)
class Replayed:
    """A replayed arrival file: times (after time_scale), and where the file gives them, each request's
    category (index into the scenario's) and its own prompt and output length in tokens."""

    times: np.ndarray
    category: np.ndarray | None
    prompt_tokens: np.ndarray | None
    output_tokens: np.ndarray | None


TOKEN_COLUMNS = {"prompt_tokens": "int", "output_tokens": "int"}


def _moe2sim_arrivals(path: Path) -> pd.DataFrame:
    """time_s[, category][, prompt_tokens, output_tokens]."""
    df = read_table(path, {"time_s": "float"}, "arrival file", optional=TOKEN_COLUMNS)
    if ("prompt_tokens" in df) != ("output_tokens" in df):
        raise InputError(path, "output_tokens" if "prompt_tokens" in df else "prompt_tokens",
                         "missing column: give both prompt_tokens and output_tokens, or neither")
    return df


def _azure_arrivals(path: Path) -> pd.DataFrame:
    """The Azure LLM inference trace 2023 (Patel et al., Splitwise, ISCA 2024; CC-BY-4.0): TIMESTAMP,
    ContextTokens, GeneratedTokens; times are seconds since the first request."""
    df = read_table(path, {"TIMESTAMP": "string", "ContextTokens": "int", "GeneratedTokens": "int"},
                    "Azure LLM trace")
    stamps = pd.to_datetime(df["TIMESTAMP"], errors="coerce")
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna())[0])
        raise InputError(path, "TIMESTAMP", f"row {row}: not a time ({df['TIMESTAMP'].iloc[row]!r})")
    return pd.DataFrame({"time_s": (stamps - stamps.iloc[0]).dt.total_seconds(),
                         "prompt_tokens": df["ContextTokens"], "output_tokens": df["GeneratedTokens"]})


REPLAY_FORMATS = {"moe2sim": _moe2sim_arrivals, "azure_llm_2023": _azure_arrivals}


def _replayed(cfg: Replay, scenario: Scenario) -> Replayed:
    path = scenario.path(cfg.file)
    df = REPLAY_FORMATS[cfg.format](path)
    if len(df) > MAX_QUERIES:
        raise InputError(path, None, f"{len(df):,} arrivals, over the limit of {MAX_QUERIES:,} per run")
    with np.errstate(over="ignore"):  # an overflow is reported below, as an error naming the file
        times = df["time_s"].to_numpy(float) * cfg.time_scale
    if not np.isfinite(times).all() or times.max() > MAX_TIME_S:
        raise InputError(path, "time_s", f"times × time_scale reach {times.max():.3g} s, beyond the limit of "
                                         f"{MAX_TIME_S:.0e} s of simulated time")
    if np.any(np.diff(times) < 0):
        raise InputError(path, "time_s", "timestamps must be non-decreasing")
    for col in TOKEN_COLUMNS:
        if col in df and (df[col] < 1).any():
            raise InputError(path, col, f"row {int(np.flatnonzero(df[col] < 1)[0])}: a request has at least 1 token")
    sizes = [df[c].to_numpy(np.int64) if c in df else None for c in TOKEN_COLUMNS]
    names = [c.name for c in scenario.categories]
    index = {n: i for i, n in enumerate(names)}
    if "category" not in df.columns:
        if cfg.category is not None and cfg.category not in index:
            raise InputError(scenario.file, "arrivals.category", f"unknown category {cfg.category!r}; "
                                                                   f"scenario has {names}")
        cats = None if cfg.category is None else np.full(len(times), index[cfg.category], np.int64)
        return Replayed(times, cats, *sizes)
    labels = df["category"].astype(str)
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise InputError(path, "category", f"unknown categories {unknown[:5]}; scenario has {names}")
    return Replayed(times, labels.map(index).to_numpy(np.int64), *sizes)


def token_lengths(spec: FixedTokens | LognormalTokens | GeometricTokens, n: int,
                   rng: np.random.Generator) -> np.ndarray:
    if isinstance(spec, FixedTokens):
        return np.full(n, spec.mean, dtype=np.int64)
    if isinstance(spec, GeometricTokens):
        return rng.geometric(1.0 / spec.mean, n).astype(np.int64)
    sigma2 = np.log1p(spec.cv ** 2)
    mu = np.log(spec.mean) - sigma2 / 2
    return np.clip(np.rint(rng.lognormal(mu, np.sqrt(sigma2), n)), 1, spec.max).astype(np.int64)


class Workload:
    """Turns a scenario's arrival process and categories into a stream of QueryBatch chunks."""

    def __init__(self, scenario: Scenario, quality: QualityData):
        self.scenario = scenario
        self.quality = quality
        self.mix = np.array([c.mix for c in scenario.categories], float)
        self.mix /= self.mix.sum()
        self.rows = []
        for i, cat in enumerate(scenario.categories):
            rows = quality.rows_of_task(cat.trace_task)
            if len(rows) == 0:
                raise InputError(scenario.path(scenario.traces.prompts), f"categories.{i}.task",
                                 f"no '{scenario.traces.split}' prompts of task '{cat.trace_task}'")
            self.rows.append(rows)
        self.replay = _replayed(scenario.arrivals, scenario) if isinstance(scenario.arrivals, Replay) else None
        self.trace_tokens = quality.prompts["prompt_tokens"].to_numpy(np.int64)
        self.trace_bytes = quality.prompts["prompt_bytes"].to_numpy(np.int64)

    def batches(self, rng: np.random.Generator, window_s: float | None = None) -> Iterator[QueryBatch]:
        """Arrival chunks until duration_s or `queries` arrivals, whichever the scenario sets;
        with window_s, no chunk spans two control windows [i·window_s, (i+1)·window_s)."""
        sc = self.scenario
        horizon = sc.duration_s if sc.duration_s is not None else np.inf
        remaining = sc.queries if sc.queries is not None else np.iinfo(np.int64).max
        for times, cats, sizes in self._arrivals(rng):
            times = times[times < horizon][:remaining]
            if cats is not None:
                cats = cats[: len(times)]
            if sizes is not None:
                sizes = (sizes[0][: len(times)], sizes[1][: len(times)])
            if len(times):
                batch = self._batch(times, cats, sizes, rng)
                if window_s is None:
                    yield batch
                else:
                    window = np.floor(times / window_s)
                    for start, stop in zip(*_runs(window)):
                        yield batch.take(slice(start, stop))
                remaining -= len(times)
            if remaining <= 0 or len(times) == 0 or times[-1] >= horizon:
                return

    def _arrivals(self, rng: np.random.Generator
                  ) -> Iterator[tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]]:
        """(times, categories or None, (prompt tokens, output tokens) or None) per chunk of arrivals."""
        arrivals = self.scenario.arrivals
        if isinstance(arrivals, Poisson):
            yield from ((t, None, None) for t in _poisson_times(arrivals.rate_per_s, rng))
        elif isinstance(arrivals, Diurnal):
            yield from ((t, None, None) for t in _diurnal_times(arrivals, rng) if len(t))
        else:
            r = self.replay
            for start in range(0, len(r.times), CHUNK):
                part = slice(start, start + CHUNK)
                yield (r.times[part], None if r.category is None else r.category[part],
                       None if r.prompt_tokens is None else (r.prompt_tokens[part], r.output_tokens[part]))

    def _batch(self, times: np.ndarray, cats: np.ndarray | None, sizes: tuple[np.ndarray, np.ndarray] | None,
               rng: np.random.Generator) -> QueryBatch:
        n = len(times)
        if cats is None:
            cats = rng.choice(len(self.mix), size=n, p=self.mix)
        prompt = np.empty(n, np.int64)
        if sizes is not None:  # the replayed requests' own lengths (bytes: BYTES_PER_TOKEN, assumed)
            prompt_tokens, output_tokens = sizes[0].copy(), sizes[1].copy()
        else:
            prompt_tokens, output_tokens = np.empty(n, np.int64), np.empty(n, np.int64)
        prompt_bytes = prompt_tokens * int(BYTES_PER_TOKEN)
        for c, cat in enumerate(self.scenario.categories):
            mask = cats == c
            m = int(mask.sum())
            if not m:
                continue
            rows = self.rows[c][rng.integers(0, len(self.rows[c]), m)]
            prompt[mask] = rows
            if sizes is not None:
                continue
            if cat.prompt_tokens == "trace":
                prompt_tokens[mask] = self.trace_tokens[rows]
                prompt_bytes[mask] = self.trace_bytes[rows]
            else:
                prompt_tokens[mask] = token_lengths(cat.prompt_tokens, m, rng)
                prompt_bytes[mask] = prompt_tokens[mask] * BYTES_PER_TOKEN
            output_tokens[mask] = token_lengths(cat.output_tokens, m, rng)
        return QueryBatch(arrival_s=times, category=cats, prompt=prompt, prompt_tokens=prompt_tokens,
                          output_tokens=output_tokens, prompt_bytes=prompt_bytes)
