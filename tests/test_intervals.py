"""Replications and confidence intervals: the estimators, the run's summary, and coverage on M/M/1.

Coverage. An M/M/1 queue (geometric output lengths at 1000 tok/s: service ~ exponential with mean
1 s, exactly the M/G/1 of tests/test_queueing.py) at ρ = 0.5 has the mean wait in queue W of the
Pollaczek-Khinchine formula. One experiment = R = 10 replications (experiments/replications.py)
of N queries each, started empty; its 95 % Student-t interval of `experts.e.queue_s_mean` should
cover W in about 95 % of experiments. Starting empty biases each replication's mean wait down by
about 2 % of W at N = 500 (the queue's relaxation time is ~10 customers), small beside the
interval's half-width (~8 % of W), so the coverage stays close to 0.95. With E experiments the
observed coverage has SD √(0.95·0.05/E): the unmarked test (E = 40) accepts [0.85, 1.0], the slow
one (E = 200) [0.90, 0.99].
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import QUICKSTART, ROOT, single_expert_raw
from moe2sim.experiments.replications import replicate, replication_seeds
from moe2sim.experiments.run import run_scenario
from moe2sim.report.intervals import (autocorrelation_time, flatten, mser_cut, sectioned, student_t_quantile,
                                      t_interval)
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.3026527), (9, 2.2621572), (29, 2.0452296),
                                          (1000, 1.9623391)])
def test_student_t_quantile_matches_tables(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_t_interval_is_mean_plus_minus_t_se():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    iv = t_interval(x)
    half = 3.1824463 * x.std(ddof=1) / 2
    assert (iv.mean, iv.n) == (3.5, 4)
    assert iv.low == pytest.approx(3.5 - half) and iv.high == pytest.approx(3.5 + half)
    assert t_interval([float("nan"), 2.0]).as_dict() == {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 1}
    assert t_interval([None, float("nan")]) is None


def test_flatten_keeps_numbers_only():
    assert flatten({"a": 1, "b": {"c": 2.5, "d": None, "e": "x", "f": True}}) == {"a": 1.0, "b.c": 2.5,
                                                                               "b.d": pytest.approx(math.nan,
                                                                                                    nan_ok=True)}


def test_sectioning_of_iid_values_is_the_plain_interval():
    rng = np.random.default_rng(0)
    q = pd.DataFrame({"arrival_s": np.arange(2000.0), "latency_s": rng.normal(5, 1, 2000)})
    out = sectioned(q, lambda part: {"x": part["latency_s"].mean()}, batches=20, warmup=0.0)["x"]
    assert out["n"] == 20 and out["mean"] == pytest.approx(q["latency_s"].mean()) and out["reliable"]
    assert out["low"] < 5 < out["high"] and out["high"] - out["low"] < 0.2


def test_seeds_start_at_the_scenario_seed():
    assert replication_seeds(7, 3) == [7, 8, 9]
    assert replication_seeds(2**63 - 1, 2) == [2**63 - 1, 0]


def test_run_with_replications_keeps_the_single_run_at_the_top(tmp_path):
    scenario = load_scenario(QUICKSTART, ["queries=300", "outputs.report=false"])
    one = run_scenario(scenario, tmp_path / "one", progress=False, jobs=1)
    three = run_scenario(scenario, tmp_path / "three", progress=False, replications=3, jobs=1)
    pooled = run_scenario(scenario, tmp_path / "pooled", progress=False, replications=3, jobs=2)  # process pool
    assert pooled == three
    for key in ("queries", "accuracy", "latency_s", "energy_J_per_query", "energy_J_total", "budget_violations"):
        assert one[key] == three[key]
    assert one["interval_method"].startswith("sectioning") and three["interval_method"] == "replications (3)"
    assert three["replications"] == {"n": 3, "seeds": [0, 1, 2]}
    table = pd.read_csv(tmp_path / "three" / "replications.csv")
    assert list(table["seed"]) == [0, 1, 2] and table["accuracy"].iloc[0] == one["accuracy"]
    iv = three["intervals"]["accuracy"]
    assert iv["n"] == 3 and iv["low"] <= table["accuracy"].mean() <= iv["high"]
    assert iv["mean"] == pytest.approx(table["accuracy"].mean())
    assert {"latency_s.p95", "energy_J_total", "categories.gsm8k.accuracy"} <= set(three["intervals"])
    json.loads((tmp_path / "three" / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert not (tmp_path / "one" / "replications.csv").exists()


def mm1_coverage(write_scenario, write_profile, experiments: int, queries: int, replications: int = 10
                 ) -> tuple[float, float]:
    m, rho = 1000, 0.5
    p = 1 / m
    es, es2 = 1.0, ((1 - p) / p ** 2 + m ** 2) / 1000.0 ** 2
    lam = rho / es
    true_wait = lam * es2 / (2 * (1 - rho))  # Pollaczek-Khinchine (geometric service: exponential up to 0.05 %)
    profile = write_profile("mm1", decode_tokens_per_s=1000.0)
    twin = Twin.build(load_scenario(write_scenario(base=single_expert_raw(
        profile, {"dist": "geometric", "mean": m}, rate=lam, queries=queries))))
    covered, estimates = 0, []
    for j in range(experiments):
        run = replace(twin, scenario=twin.scenario.model_copy(update={"seed": 10_000 + j * replications}))
        iv = replicate(run, replications)[0]["intervals"]["experts.e.queue_s_mean"]
        assert iv["n"] == replications
        covered += iv["low"] <= true_wait <= iv["high"]
        estimates.append(iv["mean"])
    assert np.mean(estimates) == pytest.approx(true_wait, rel=0.06)
    print(f"M/M/1 rho 0.5: {experiments} experiments x {replications} replications x {queries} queries: coverage "
          f"{covered / experiments:.3f}, mean estimate {np.mean(estimates):.4f} vs W {true_wait:.4f}")
    return covered / experiments, true_wait


def test_mm1_wait_intervals_cover_the_closed_form(write_scenario, write_profile):
    coverage, _ = mm1_coverage(write_scenario, write_profile, experiments=40, queries=400)
    assert 0.85 <= coverage <= 1.0, coverage


@pytest.mark.slow
def test_mm1_wait_intervals_cover_the_closed_form_200_experiments(write_scenario, write_profile):
    coverage, _ = mm1_coverage(write_scenario, write_profile, experiments=200, queries=500)
    assert 0.90 <= coverage <= 0.99, coverage


def test_cli_run_with_replications_prints_and_draws_intervals(tmp_path, capsys):
    from moe2sim.cli import main

    out = tmp_path / "r2"
    assert main(["run", str(QUICKSTART), "--set", "queries=120", "--replications", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "intervals: 95 % (replications (2))" in printed and " ± " in printed
    page = (out / "report.html").read_text()
    assert "half-width of the 95 % interval, replications (2)" in page
    with pytest.raises(SystemExit) as exc:  # argparse: R must be at least 1
        main(["run", str(QUICKSTART), "--replications", "0", "--out", str(out)])
    assert exc.value.code == 2


# the M/M/1 sampler and latency metrics of benchmarks/bench_intervals.py, which records these figures
spec = importlib.util.spec_from_file_location("bench_intervals", ROOT / "benchmarks" / "bench_intervals.py")
bench_intervals = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_intervals)
lindley_mm1, latency_metrics = bench_intervals.lindley_mm1, bench_intervals.metrics


def test_autocorrelation_time_of_independent_and_ar1_series():
    rng = np.random.default_rng(0)
    assert autocorrelation_time(rng.normal(size=20_000)) == pytest.approx(1.0, abs=0.2)
    phi, x = 0.9, np.zeros(200_000)
    noise = rng.normal(size=len(x))
    for i in range(1, len(x)):
        x[i] = phi * x[i - 1] + noise[i]
    assert autocorrelation_time(x) == pytest.approx((1 + phi) / (1 - phi), rel=0.15)  # AR(1): (1 + φ)/(1 − φ)


def test_mser_drops_a_planted_transient_and_nothing_from_a_stationary_run():
    rng = np.random.default_rng(1)
    assert 90 <= mser_cut(np.r_[np.full(100, 20.0), rng.exponential(1.0, 1900)]) <= 110
    assert mser_cut(rng.exponential(1.0, 2000)) <= 100


def test_sectioning_centres_on_the_whole_run_and_says_when_it_cannot_be_trusted():
    runs = lindley_mm1(2000, 0.5, np.random.default_rng(2))
    iv = sectioned(runs, latency_metrics, warmup=0.0, load=0.5)
    assert iv["latency_s.p95"]["mean"] == pytest.approx(np.percentile(runs["latency_s"], 95))
    assert iv["latency_s.p95"]["reliable"] and iv["latency_s.p95"]["low"] < iv["latency_s.p95"]["mean"]
    assert not iv["latency_s.p99"]["reliable"] and "beyond the p99" in iv["latency_s.p99"]["why"]
    busy = sectioned(runs, latency_metrics, warmup=0.0, load=0.8)  # relaxation time 1/(1 − √0.8)² ≈ 89 queries
    assert not busy["latency_s.mean"]["reliable"] and "effective samples" in busy["latency_s.mean"]["why"]
    assert sectioned(runs, latency_metrics, warmup="mser")["latency_s.mean"]["warmup_queries"] <= 1000


@pytest.mark.parametrize("rho", [0.5, 0.65, 0.8])
def test_single_run_intervals_cover_mm1_or_say_they_cannot(rho):
    """M/M/1 sojourn times are exponential with rate 1 − ρ: mean 1/(1 − ρ), p_q = −ln(1 − q)/(1 − ρ). In 120
    single runs of 2,000 queries the printed p95 is within 10 % of the truth on average, and each interval
    covers the truth or is flagged unreliable in at least 85 % of runs."""
    rng = np.random.default_rng(int(rho * 100))
    truth = {"mean": 1 / (1 - rho), "p95": -math.log(0.05) / (1 - rho), "p99": -math.log(0.01) / (1 - rho)}
    runs = [sectioned(lindley_mm1(2000, rho, rng), latency_metrics, load=rho) for _ in range(120)]
    for name, value in truth.items():
        entries = [r[f"latency_s.{name}"] for r in runs]
        ok = np.mean([(e["low"] <= value <= e["high"]) or not e["reliable"] for e in entries])
        assert ok >= 0.85, (name, ok)
    assert np.mean([r["latency_s.p95"]["mean"] for r in runs]) == pytest.approx(truth["p95"], rel=0.10)
