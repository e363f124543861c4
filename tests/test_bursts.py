"""Arrival bursts (Diurnal.bursts, a two-state Markov-modulated Poisson process) and window-aligned
arrival batches (Workload.batches(rng, window_s)), at the workload level: no simulation, no gate."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pytest

from conftest import SCENARIOS, quickstart_raw
from moe2sim.workload import generator as wl
from moe2sim.scenario import Diurnal, Scenario
from moe2sim.data.quality import load_quality
from moe2sim.workload import CHUNK, QueryBatch, Workload

FIELDS = ("arrival_s", "category", "prompt", "prompt_tokens", "output_tokens", "prompt_bytes")


@pytest.fixture(scope="module")
def quality():
    sc = scenario({"process": "poisson", "rate_per_s": 1.0}, duration_s=1.0)
    return load_quality(sc.path(sc.traces.prompts), sc.path(sc.traces.quality), [e.model for e in sc.experts],
                        sc.traces.split)


def scenario(arrivals: dict, duration_s: float | None = None, queries: int | None = None) -> Scenario:
    """quickstart with other arrivals and a horizon (validated like a loaded file)."""
    raw = quickstart_raw()
    raw.pop("queries")
    raw["arrivals"] = arrivals
    if duration_s is not None:
        raw["duration_s"] = duration_s
    if queries is not None:
        raw["queries"] = queries
    return Scenario.model_validate({**raw, "file": SCENARIOS / "test.yaml"})


def collect(batches: Iterator[QueryBatch]) -> tuple[list[QueryBatch], dict[str, np.ndarray]]:
    batches = list(batches)
    assert batches, "no arrivals"
    return batches, {f: np.concatenate([getattr(b, f) for b in batches]) for f in FIELDS}


def bursty(base: float, factor: float, duration: float, gap: float, amplitude: float = 0.0) -> dict:
    return {"process": "diurnal", "mean_rate_per_s": base, "amplitude": amplitude, "period_s": 86_400.0,
            "bursts": {"factor": factor, "mean_duration_s": duration, "mean_gap_s": gap}}


@pytest.fixture
def clocks(monkeypatch) -> list:
    """Every _BurstClock the workload creates, to read its gap/burst edges afterwards."""
    made = []

    class Recording(wl._BurstClock):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(wl, "_BurstClock", Recording)
    return made


# Long-run burst statistics: base 0.5/s, factor 4, bursts of 50 s every ~150 s of gap, over 10^6 s
# (~5,000 gap/burst cycles, ~875,000 arrivals; 2·10^6 thinning candidates, well under a second).
BASE, FACTOR, DUR, GAP, T = 0.5, 4.0, 50.0, 150.0, 1_000_000.0


@pytest.fixture(scope="module")
def long_bursty_run(quality):
    """(arrival times, burst clock edges) of one long run, shared by the tests below."""
    made = []

    class Recording(wl._BurstClock):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wl, "_BurstClock", Recording)
        sc = scenario(bursty(BASE, FACTOR, DUR, GAP), duration_s=T)
        _, cols = collect(Workload(sc, quality).batches(np.random.default_rng(11)))
    assert len(made) == 1
    return cols["arrival_s"], np.asarray(made[0].edges)


def burst_time(edges: np.ndarray, horizon: float) -> float:
    """Seconds of [0, horizon) spent in bursts; edges alternate gap/burst starting with a gap at 0."""
    e = np.minimum(edges, horizon)
    starts, stops = e[1::2], e[2::2]
    n = min(len(starts), len(stops))
    total = float((stops[:n] - starts[:n]).sum())
    if len(starts) > n:  # a burst still on at the horizon
        total += horizon - starts[-1]
    return total


def test_long_run_rate_matches_mmpp_mean(long_bursty_run):
    times, _ = long_bursty_run
    n = len(times)
    expected = BASE * T * (GAP + FACTOR * DUR) / (GAP + DUR)  # 875,000
    # Var N = E N (Poisson given the bursts) + (base (f - 1))² Var B, where B is the time in bursts:
    # for a two-state Markov chain with exit rates 1/g and 1/d, Var B ≈ 2 T (g d)² / (g + d)³
    # (sd of B ≈ 3,750 s here, so sd N ≈ 5,700, 0.65 %). Starting in a gap biases E B by only
    # g d² / (g + d)² ≈ 9 s. 4 sd: a false alarm ~6e-5, yet 1/40 of the gap to the no-burst rate.
    var_b = 2 * T * (GAP * DUR) ** 2 / (GAP + DUR) ** 3
    sd = math.sqrt(expected + (BASE * (FACTOR - 1)) ** 2 * var_b)
    assert abs(n - expected) < 4 * sd, (n, expected, sd)
    assert abs(n - BASE * T) > 20 * sd  # the bursts did raise the rate
    assert times[0] >= 0 and times[-1] < T and (np.diff(times) > 0).all()


def test_burst_clock_alternates_exponential_periods(long_bursty_run):
    _, edges = long_bursty_run
    assert edges[0] == 0.0 and (np.diff(edges) > 0).all() and edges[-1] >= T * 0.999
    gaps, bursts = np.diff(edges)[0::2], np.diff(edges)[1::2]
    # ~5,000 of each: the mean of n exponentials has relative sd 1/√n ≈ 1.4 %; 4 sd ≈ 5.7 %.
    for sample, mean in ((gaps, GAP), (bursts, DUR)):
        assert sample.mean() == pytest.approx(mean, rel=4 / math.sqrt(len(sample)))
        assert sample.std() / sample.mean() == pytest.approx(1.0, abs=0.06)  # exponential: cv 1
    frac = burst_time(edges, T) / T
    sd_frac = math.sqrt(2 * T * (GAP * DUR) ** 2 / (GAP + DUR) ** 3) / T
    assert frac == pytest.approx(DUR / (GAP + DUR), abs=4 * sd_frac)


def test_rate_inside_bursts_is_factor_times_outside(long_bursty_run):
    times, edges = long_bursty_run
    in_burst = np.searchsorted(edges, times, side="right") % 2 == 0
    b = burst_time(edges, T)
    n_in, n_out = int(in_burst.sum()), int((~in_burst).sum())
    rate_in, rate_out = n_in / b, n_out / (T - b)
    # Given the edges, both counts are Poisson: relative sd 1/√n (≈ 0.14 % and 0.16 %); 4 sd each.
    assert rate_in == pytest.approx(FACTOR * BASE, rel=4 / math.sqrt(n_in))
    assert rate_out == pytest.approx(BASE, rel=4 / math.sqrt(n_out))
    assert rate_in / rate_out == pytest.approx(FACTOR, rel=4 / math.sqrt(n_in) + 4 / math.sqrt(n_out))


def test_bursts_multiply_the_diurnal_rate(quality, clocks):
    """With amplitude > 0 the burst factor multiplies λ(t): counts near the peak and near the trough of
    the day, inside and outside bursts, match ∫ λ(t)·(f if in a burst else 1) dt over those times."""
    period, amp, base, f = 20_000.0, 0.6, 0.2, 5.0
    raw = bursty(base, f, 400.0, 800.0, amplitude=amp)
    raw["period_s"], raw["phase_s"] = period, 0.0
    horizon = 50 * period
    _, cols = collect(Workload(scenario(raw, duration_s=horizon), quality).batches(np.random.default_rng(3)))
    t, edges = cols["arrival_s"], np.asarray(clocks[0].edges)
    # Expected counts by the midpoint rule on a 1 s grid (edge rounding: ±0.5 s per edge, random in
    # sign, far below the Poisson noise).
    grid = np.arange(0, horizon, 1.0) + 0.5
    grid_burst = np.searchsorted(edges, grid, side="right") % 2 == 0
    lam = base * (1 + amp * np.sin(2 * np.pi * grid / period)) * np.where(grid_burst, f, 1.0)
    in_burst = np.searchsorted(edges, t, side="right") % 2 == 0
    for centre in (0.25, 0.75):  # peak and trough of sin
        band = np.abs((t % period) / period - centre) < 0.05
        grid_band = np.abs((grid % period) / period - centre) < 0.05
        for inside in (True, False):
            n = int((band & (in_burst == inside)).sum())
            expected = float(lam[grid_band & (grid_burst == inside)].sum())
            # Poisson given the edges: sd √expected; 4 sd.
            assert abs(n - expected) < 4 * math.sqrt(expected), (centre, inside, n, expected)
    assert len(t) == pytest.approx(lam.sum(), abs=4 * math.sqrt(lam.sum()))


def pre_burst_diurnal_times(cfg: Diurnal, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The diurnal thinning as it was before bursts existed (commit d54141f), for comparison."""
    peak = cfg.mean_rate_per_s * (1 + cfg.amplitude)
    t = 0.0
    while True:
        times = t + np.cumsum(rng.exponential(1.0 / peak, CHUNK))
        t = float(times[-1])
        rate = cfg.mean_rate_per_s * (1 + cfg.amplitude * np.sin(2 * np.pi * (times - cfg.phase_s) / cfg.period_s))
        keep = rng.random(len(times)) * peak < rate
        yield times[keep]


@pytest.mark.parametrize("bursts", ["absent", "null"])
def test_no_bursts_same_arrivals_as_before(quality, monkeypatch, clocks, bursts):
    arrivals = {"process": "diurnal", "mean_rate_per_s": 2.0, "amplitude": 0.7, "period_s": 3_000.0,
                "phase_s": 500.0}
    if bursts == "null":
        arrivals["bursts"] = None
    sc = scenario(arrivals, duration_s=12_000.0)  # ~24,000 arrivals: several chunks
    work = Workload(sc, quality)
    _, now = collect(work.batches(np.random.default_rng(42)))
    assert not clocks, "a burst clock was created although no bursts are configured"
    monkeypatch.setattr(wl, "_diurnal_times", pre_burst_diurnal_times)
    _, before = collect(work.batches(np.random.default_rng(42)))
    assert len(now["arrival_s"]) > 2 * CHUNK
    for f in FIELDS:
        np.testing.assert_array_equal(now[f], before[f], err_msg=f)


WINDOW_CASES = {
    "bursty-diurnal": (bursty(1.0, 3.0, 300.0, 900.0, amplitude=0.5), dict(duration_s=40_000.0), 300.0),
    "poisson-short-windows": ({"process": "poisson", "rate_per_s": 3.0}, dict(duration_s=6_000.0), 0.7),
    "poisson-queries": ({"process": "poisson", "rate_per_s": 0.5}, dict(queries=5_000), 60.0),
    "window-longer-than-chunk": ({"process": "poisson", "rate_per_s": 4.0}, dict(duration_s=9_000.0), 4_000.0),
}


@pytest.mark.parametrize("case", list(WINDOW_CASES))
def test_window_batches_split_but_never_change_arrivals(quality, case):
    arrivals, horizon, window_s = WINDOW_CASES[case]
    work = Workload(scenario(arrivals, **horizon), quality)
    plain_batches, plain = collect(work.batches(np.random.default_rng(5)))
    split_batches, split = collect(work.batches(np.random.default_rng(5), window_s))
    for f in FIELDS:
        np.testing.assert_array_equal(split[f], plain[f], err_msg=f)
    last = -1.0
    for b in split_batches:
        assert len(b) > 0
        window = np.floor(b.arrival_s / window_s)
        assert (window == window[0]).all(), f"a batch spans windows {window.min()}..{window.max()}"
        assert b.arrival_s[0] > last  # in time order, no overlap
        last = b.arrival_s[-1]
    # Splitting is the only difference: at least one cut per window boundary that has arrivals on both sides.
    windows_hit = np.unique(np.floor(plain["arrival_s"] / window_s))
    assert len(split_batches) >= len(windows_hit)
    assert len(split_batches) >= len(plain_batches)
