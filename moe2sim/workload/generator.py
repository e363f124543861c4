"""Workload: when queries arrive, of which category, with which prompt and output length.

Arrival processes (all seeded, generated in chunks so memory stays flat):
- poisson:  exponential gaps at rate λ;
- diurnal:  non-homogeneous Poisson with λ(t) = λ̄ (1 + a sin(2π (t - φ)/P)), by thinning
            (Lewis & Shedler 1979) from a homogeneous process at λ̄ (1 + a);
- replay:   timestamps (and optionally categories) read from a file.
Each arrival draws its category by the scenario mix (unless replayed), a prompt of that
category uniformly from the trace split, its prompt length from the trace (or a stated
distribution) and its output length from the category's distribution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

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


def _replayed(cfg: Replay, scenario: Scenario) -> tuple[np.ndarray, np.ndarray | None]:
    path = scenario.path(cfg.file)
    df = read_table(path, {"time_s": "float"}, "arrival file")
    if len(df) > MAX_QUERIES:
        raise InputError(path, None, f"{len(df):,} arrivals, over the limit of {MAX_QUERIES:,} per run")
    with np.errstate(over="ignore"):  # an overflow is reported below, as an error naming the file
        times = df["time_s"].to_numpy(float) * cfg.time_scale
    if not np.isfinite(times).all() or times.max() > MAX_TIME_S:
        raise InputError(path, "time_s", f"times × time_scale reach {times.max():.3g} s, beyond the limit of "
                                         f"{MAX_TIME_S:.0e} s of simulated time")
    if np.any(np.diff(times) < 0):
        raise InputError(path, "time_s", "timestamps must be non-decreasing")
    if "category" not in df.columns:
        return times, None
    names = [c.name for c in scenario.categories]
    index = {n: i for i, n in enumerate(names)}
    labels = df["category"].astype(str)
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise InputError(path, "category", f"unknown categories {unknown[:5]}; scenario has {names}")
    return times, labels.map(index).to_numpy(np.int64)


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
        for times, cats in self._arrivals(rng):
            times = times[times < horizon][:remaining]
            if cats is not None:
                cats = cats[: len(times)]
            if len(times):
                batch = self._batch(times, cats, rng)
                if window_s is None:
                    yield batch
                else:
                    window = np.floor(times / window_s)
                    for start, stop in zip(*_runs(window)):
                        yield batch.take(slice(start, stop))
                remaining -= len(times)
            if remaining <= 0 or len(times) == 0 or times[-1] >= horizon:
                return

    def _arrivals(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        arrivals = self.scenario.arrivals
        if isinstance(arrivals, Poisson):
            yield from ((t, None) for t in _poisson_times(arrivals.rate_per_s, rng))
        elif isinstance(arrivals, Diurnal):
            yield from ((t, None) for t in _diurnal_times(arrivals, rng) if len(t))
        else:
            times, cats = self.replay
            for start in range(0, len(times), CHUNK):
                yield times[start:start + CHUNK], None if cats is None else cats[start:start + CHUNK]

    def _batch(self, times: np.ndarray, cats: np.ndarray | None, rng: np.random.Generator) -> QueryBatch:
        n = len(times)
        if cats is None:
            cats = rng.choice(len(self.mix), size=n, p=self.mix)
        prompt = np.empty(n, np.int64)
        prompt_tokens = np.empty(n, np.int64)
        output_tokens = np.empty(n, np.int64)
        prompt_bytes = np.empty(n, np.int64)
        for c, cat in enumerate(self.scenario.categories):
            mask = cats == c
            m = int(mask.sum())
            if not m:
                continue
            rows = self.rows[c][rng.integers(0, len(self.rows[c]), m)]
            prompt[mask] = rows
            if cat.prompt_tokens == "trace":
                prompt_tokens[mask] = self.trace_tokens[rows]
                prompt_bytes[mask] = self.trace_bytes[rows]
            else:
                prompt_tokens[mask] = token_lengths(cat.prompt_tokens, m, rng)
                prompt_bytes[mask] = prompt_tokens[mask] * BYTES_PER_TOKEN
            output_tokens[mask] = token_lengths(cat.output_tokens, m, rng)
        return QueryBatch(arrival_s=times, category=cats, prompt=prompt, prompt_tokens=prompt_tokens,
                          output_tokens=output_tokens, prompt_bytes=prompt_bytes)
