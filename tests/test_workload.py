"""Workload: arrival processes, replay, category mix, prompt selection and stopping rules."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import TRACES, quickstart_raw
from moe2sim.errors import InputError
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin
from moe2sim.workload import CHUNK, QueryBatch


def workload_of(write_scenario, raw: dict):
    twin = Twin.build(load_scenario(write_scenario(base=raw)))
    return twin


def collect(twin, seed: int = 0) -> QueryBatch:
    batches = list(twin.workload.batches(np.random.default_rng(seed)))
    assert batches, "no arrivals"
    cols = {f: np.concatenate([getattr(b, f) for b in batches])
            for f in ("arrival_s", "category", "prompt", "prompt_tokens", "output_tokens", "prompt_bytes")}
    return QueryBatch(**cols)


def horizon_raw(arrivals: dict, duration_s: float) -> dict:
    raw = quickstart_raw()
    del raw["queries"]
    raw["duration_s"] = duration_s
    raw["arrivals"] = arrivals
    return raw


def test_poisson_count_over_long_horizon(write_scenario):
    lam, T = 2.0, 20_000.0
    q = collect(workload_of(write_scenario, horizon_raw({"process": "poisson", "rate_per_s": lam}, T)))
    n = len(q)
    # N ~ Poisson(λT): sd = √(λT) = 200; 4 sd is a false-alarm rate of ~6e-5.
    assert abs(n - lam * T) < 4 * math.sqrt(lam * T)
    t = q.arrival_s
    assert (np.diff(t) >= 0).all() and t[0] >= 0 and t[-1] < T
    # Exponential gaps: mean 1/λ, coefficient of variation 1.
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(1 / lam, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)


def test_duration_cuts_at_horizon_across_chunks(write_scenario):
    # λT = 3 chunks' worth: the cut happens in a later chunk, not the first one.
    T = 3 * CHUNK / 5.0
    q = collect(workload_of(write_scenario, horizon_raw({"process": "poisson", "rate_per_s": 5.0}, T)))
    assert q.arrival_s[-1] < T
    assert len(q) > 2 * CHUNK
    assert (np.diff(q.arrival_s) > 0).all()  # chunks join without overlap or gap reset


def test_diurnal_peak_and_trough_halves(write_scenario):
    """λ(t) = λ̄ (1 + a sin(2π t / P)). Over each period the peak half (sin > 0) expects
    λ̄ (P/2 + a P/π) arrivals and the trough half λ̄ (P/2 - a P/π). Counts are Poisson, so
    each must lie within 4 √(expected) of its integral."""
    lam, a, P, periods = 2.0, 0.5, 1000.0, 10
    raw = horizon_raw({"process": "diurnal", "mean_rate_per_s": lam, "amplitude": a, "period_s": P,
                       "phase_s": 0.0}, periods * P)
    t = collect(workload_of(write_scenario, raw)).arrival_s
    peak = ((t % P) < P / 2).sum()
    trough = len(t) - peak
    expect_peak = periods * lam * (P / 2 + a * P / math.pi)
    expect_trough = periods * lam * (P / 2 - a * P / math.pi)
    assert abs(peak - expect_peak) < 4 * math.sqrt(expect_peak)
    assert abs(trough - expect_trough) < 4 * math.sqrt(expect_trough)
    # Finer check: counts per eighth of a period follow the integral of the rate.
    edges = np.linspace(0, P, 9)
    counts = np.histogram(t % P, bins=edges)[0]
    integ = periods * lam * (np.diff(edges) - a * P / (2 * math.pi) * np.diff(np.cos(2 * math.pi * edges / P)))
    assert np.all(np.abs(counts - integ) < 4 * np.sqrt(integ))


def test_diurnal_phase_shifts_the_peak(write_scenario):
    lam, a, P = 2.0, 0.8, 1000.0
    raw = horizon_raw({"process": "diurnal", "mean_rate_per_s": lam, "amplitude": a, "period_s": P,
                       "phase_s": P / 2}, 10 * P)
    t = collect(workload_of(write_scenario, raw)).arrival_s
    # With phase P/2 the first half of each period is now the trough.
    first_half = ((t % P) < P / 2).sum()
    assert first_half < 0.5 * (len(t) - first_half)


def write_replay(tmp_path, rows: list[tuple[float, str]] | None, times=None, name="arrivals.csv"):
    path = tmp_path / name
    if rows is not None:
        pd.DataFrame(rows, columns=["time_s", "category"]).to_csv(path, index=False)
    else:
        pd.DataFrame({"time_s": times}).to_csv(path, index=False)
    return path


def replay_raw(path, time_scale: float = 1.0, duration_s: float = 1e6) -> dict:
    return horizon_raw({"process": "replay", "file": str(path), "time_scale": time_scale}, duration_s)


def test_replay_reproduces_timestamps_and_categories(tmp_path, write_scenario):
    rng = np.random.default_rng(5)
    times = np.round(np.cumsum(rng.exponential(0.7, 20_000)), 6)  # > 2 chunks
    names = ["mmlu", "gsm8k", "arc_challenge", "humaneval"]
    cats = rng.choice(names, len(times), p=[0.1, 0.2, 0.3, 0.4])  # not the scenario mix
    path = write_replay(tmp_path, list(zip(times, cats)))
    twin = workload_of(write_scenario, replay_raw(path))
    q = collect(twin)
    np.testing.assert_array_equal(q.arrival_s, times)
    assert [names[c] for c in q.category] == list(cats)


def test_replay_without_category_uses_mix_and_time_scale(tmp_path, write_scenario):
    times = np.arange(0, 5000, 0.5)
    path = write_replay(tmp_path, None, times=times)
    q = collect(workload_of(write_scenario, replay_raw(path, time_scale=2.0)))
    np.testing.assert_allclose(q.arrival_s, times * 2.0)
    freq = np.bincount(q.category, minlength=4) / len(q)
    np.testing.assert_allclose(freq, [0.4, 0.3, 0.2, 0.1], atol=0.02)


def test_replay_respects_duration(tmp_path, write_scenario):
    times = np.arange(100.0)
    path = write_replay(tmp_path, None, times=times)
    q = collect(workload_of(write_scenario, replay_raw(path, duration_s=50.0)))
    np.testing.assert_array_equal(q.arrival_s, np.arange(50.0))


@pytest.mark.parametrize("rows, field", [([(0.0, "mmlu"), (2.0, "gsm8k"), (1.0, "mmlu")], "time_s"),
                                         ([(0.0, "mmlu"), (1.0, "poetry")], "category")],
                         ids=["decreasing", "unknown_category"])
def test_replay_file_is_checked_when_the_twin_is_built(tmp_path, write_scenario, rows, field):
    """A bad replay file fails at build time (so `validate` catches it), naming file and column."""
    path = write_replay(tmp_path, rows)
    with pytest.raises(InputError) as info:
        workload_of(write_scenario, replay_raw(path))
    assert info.value.file == str(path) and info.value.field == field


def test_replay_rejects_missing_time_column(tmp_path, write_scenario):
    path = tmp_path / "arrivals.csv"
    path.write_text("t,category\n0.0,mmlu\n")
    with pytest.raises(InputError) as info:
        workload_of(write_scenario, replay_raw(path))
    assert info.value.field == "time_s"


def test_category_mix_frequencies(write_scenario):
    raw = quickstart_raw()
    raw["queries"] = 40_000
    q = collect(workload_of(write_scenario, raw))
    mix = np.array([0.4, 0.3, 0.2, 0.1])
    freq = np.bincount(q.category, minlength=4) / len(q)
    sd = np.sqrt(mix * (1 - mix) / len(q))
    assert np.all(np.abs(freq - mix) < 4 * sd), (freq, mix)


def test_mix_is_normalised(write_scenario):
    raw = quickstart_raw()
    raw["queries"] = 20_000
    for c, w in zip(raw["categories"], [3, 1, 0, 0]):
        c["mix"] = w if w else 1e-9
    q = collect(workload_of(write_scenario, raw))
    assert (np.bincount(q.category, minlength=4)[:2] / len(q)) == pytest.approx([0.75, 0.25], abs=0.015)


@pytest.mark.parametrize("split", ["test", "train"])
def test_prompts_come_from_category_task_and_split(write_scenario, split):
    raw = quickstart_raw()
    raw["queries"] = 20_000
    raw["traces"] = {"split": split}
    # A category whose name differs from its trace task.
    raw["categories"][1] = {"name": "math", "task": "gsm8k", "mix": 0.3, "latency_budget_s": 6.0,
                            "output_tokens": {"dist": "fixed", "mean": 10}}
    twin = workload_of(write_scenario, raw)
    q = collect(twin)
    prompts = pd.read_parquet(TRACES / "prompts.parquet").set_index("prompt_id")
    ids = twin.quality.prompts["prompt_id"].to_numpy()[q.prompt]
    rows = prompts.loc[ids]
    tasks = np.array(["mmlu", "gsm8k", "arc_challenge", "humaneval"])[q.category]
    np.testing.assert_array_equal(rows["task"].astype(str).to_numpy(), tasks)
    assert set(rows["split"].astype(str)) == {split}
    # Prompt lengths come from the trace rows that were picked.
    np.testing.assert_array_equal(q.prompt_tokens, rows["prompt_tokens"].to_numpy())
    np.testing.assert_array_equal(q.prompt_bytes, rows["prompt_bytes"].to_numpy())
    # Prompts are drawn across the whole split, not a few rows (the test split has 1,319 gsm8k prompts).
    n_task = ((prompts["task"] == "gsm8k") & (prompts["split"] == split)).sum()
    assert len(set(ids[q.category == 1])) > 0.9 * n_task


def test_output_token_distributions(write_scenario):
    raw = quickstart_raw()
    raw["queries"] = 30_000
    raw["categories"] = [
        {"name": "mmlu", "mix": 1, "latency_budget_s": 1, "output_tokens": {"dist": "fixed", "mean": 17}},
        {"name": "gsm8k", "mix": 1, "latency_budget_s": 1, "output_tokens": {"dist": "geometric", "mean": 50}},
        {"name": "humaneval", "mix": 1, "latency_budget_s": 1,
         "output_tokens": {"dist": "lognormal", "mean": 100, "cv": 0.5, "max": 400}},
    ]
    q = collect(workload_of(write_scenario, raw))
    fixed, geo, logn = (q.output_tokens[q.category == c] for c in range(3))
    assert (fixed == 17).all()
    assert geo.min() >= 1 and geo.mean() == pytest.approx(50, rel=0.05)
    assert geo.std() == pytest.approx(math.sqrt(50 * 49), rel=0.08)  # geometric variance (1-p)/p²
    assert logn.min() >= 1 and logn.max() <= 400
    assert logn.mean() == pytest.approx(100, rel=0.03)
    assert logn.std() / logn.mean() == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize("n", [1, 777, CHUNK, 2 * CHUNK + 5])
def test_queries_mode_stops_at_exactly_n(write_scenario, n):
    raw = quickstart_raw()
    raw["queries"] = n
    q = collect(workload_of(write_scenario, raw))
    assert len(q) == n


def test_queries_mode_with_diurnal_and_replay(tmp_path, write_scenario):
    raw = quickstart_raw()
    raw["queries"] = 3000
    raw["arrivals"] = {"process": "diurnal", "mean_rate_per_s": 1.0, "amplitude": 0.9, "period_s": 600}
    assert len(collect(workload_of(write_scenario, raw))) == 3000
    path = write_replay(tmp_path, None, times=np.arange(10_000.0))
    raw["arrivals"] = {"process": "replay", "file": str(path)}
    q = collect(workload_of(write_scenario, raw))
    np.testing.assert_array_equal(q.arrival_s, np.arange(3000.0))


def test_simulation_has_exactly_n_queries(write_scenario):
    raw = quickstart_raw()
    raw["queries"] = 1234
    _, queries, legs = workload_of(write_scenario, raw).simulate()
    assert len(queries) == 1234 and len(legs) == 2 * 1234


def test_same_seed_same_workload(write_scenario):
    twin = workload_of(write_scenario, quickstart_raw())
    a, b, c = collect(twin, 4), collect(twin, 4), collect(twin, 5)
    for f in ("arrival_s", "category", "prompt", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.arrival_s, c.arrival_s)
