"""Queueing correctness of the simulator against closed forms.

Each set-up is a scenario: one expert, k = 1 (fixed_subset), one category with 1-token prompts
and a profile with no TTFT overhead and a 1e12 tok/s prefill, so a leg's service time is
output_tokens / decode_tokens_per_s (+1e-12 s). The uplink delay is the same for every query
(4 prompt bytes), so arrivals at the expert are the Poisson arrivals shifted by a constant.
Waiting time = the legs table's queue_s (reach the expert -> service start).

Tolerance. Waiting times of successive customers are strongly correlated, so the i.i.d.
standard error would be far too small. We use batch means: drop the first 5 % (warm-up from an
empty system), cut the rest into 30 consecutive batches of ~4,750 customers (much longer than
the correlation time, a few hundred customers at ρ = 0.8) and take SE = sd(batch means) / √30.
The estimate must lie within 4 SE of the closed form (a false alarm rate of ~1e-4 per case for a
correct simulator, with the t-distribution on 29 d.f. still < 1e-3), and SE must be below 5 % of
W, so a bias of 20 % or more of W cannot pass. 150,000 queries per case keep SE at 1-3 % of W.
"""
from __future__ import annotations

import heapq
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import single_expert_raw
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin

RATE = 1000.0          # decode tokens/s
MEAN_TOKENS = 1000     # -> mean service time 1 s
N_QUERIES = 150_000
WARMUP = 0.05
BATCHES = 30


def simulate_queue(write_scenario, write_profile, output_tokens: dict, *, rate: float, queries: int,
                   slots: int = 1, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    profile = write_profile("queue-profile", ttft_base_s=0.0, prefill_tokens_per_s=1e12,
                            decode_tokens_per_s=RATE, prefill_power_W=20.0, decode_power_W=20.0,
                            idle_power_W=10.0)
    path = write_scenario(base=single_expert_raw(profile, output_tokens, rate=rate, queries=queries,
                                                 slots=slots, seed=seed))
    _, queries_df, legs = Twin.build(load_scenario(path)).simulate()
    assert len(queries_df) == queries and len(legs) == queries
    return queries_df, legs


def batch_means(x: np.ndarray, batches: int = BATCHES) -> tuple[float, float]:
    x = x[int(len(x) * WARMUP):]
    means = np.array([b.mean() for b in np.array_split(x, batches)])
    return float(x.mean()), float(means.std(ddof=1) / math.sqrt(batches))


def assert_close_to(mean: float, se: float, expected: float) -> None:
    assert se < 0.05 * expected, f"SE {se:.4f} too large for a powerful test (W = {expected:.4f})"
    assert abs(mean - expected) < 4 * se, f"mean wait {mean:.4f} vs closed form {expected:.4f} (SE {se:.4f})"


def pk_mean_wait(lam: float, es: float, es2: float) -> float:
    """Pollaczek-Khinchine: M/G/1 mean wait in queue."""
    rho = lam * es
    return lam * es2 / (2 * (1 - rho))


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load a = λ/μ < c."""
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


def test_erlang_c_reference_values():
    # Sanity of the helper itself: c = 1 reduces to ρ; a textbook value for c = 2, a = 1 (1/3).
    assert erlang_c(1, 0.8) == pytest.approx(0.8)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mg1_geometric_service_matches_pollaczek_khinchine(write_scenario, write_profile, rho):
    """Geometric(p = 1/m) output tokens / r: E[S] = m/r, E[S²] = (Var + m²)/r², Var = (1-p)/p²."""
    m, p = MEAN_TOKENS, 1 / MEAN_TOKENS
    es = m / RATE
    es2 = ((1 - p) / p ** 2 + m ** 2) / RATE ** 2
    lam = rho / es
    _, legs = simulate_queue(write_scenario, write_profile, {"dist": "geometric", "mean": m},
                             rate=lam, queries=N_QUERIES)
    service = (legs["ttft_s"] + legs["decode_s"]).to_numpy()
    assert service.mean() == pytest.approx(es, rel=0.02)
    mean, se = batch_means(legs["queue_s"].to_numpy())
    assert_close_to(mean, se, pk_mean_wait(lam, es, es2))


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_matches_closed_form(write_scenario, write_profile, rho):
    s = MEAN_TOKENS / RATE
    lam = rho / s
    _, legs = simulate_queue(write_scenario, write_profile, {"dist": "fixed", "mean": MEAN_TOKENS},
                             rate=lam, queries=N_QUERIES)
    np.testing.assert_allclose(legs["ttft_s"] + legs["decode_s"], s, rtol=1e-9)
    mean, se = batch_means(legs["queue_s"].to_numpy())
    assert_close_to(mean, se, rho * s / (2 * (1 - rho)))


def test_mmc_matches_erlang_c(write_scenario, write_profile):
    """c = 3 slots, ρ = 0.7 per server. Geometric lengths with mean 1000 have SCV 0.999, so the
    service is exponential up to a ~0.05 % effect on W, far below the test's resolution."""
    c, rho = 3, 0.7
    mu = RATE / MEAN_TOKENS
    lam = rho * c * mu
    _, legs = simulate_queue(write_scenario, write_profile, {"dist": "geometric", "mean": MEAN_TOKENS},
                             rate=lam, queries=N_QUERIES, slots=c)
    mean, se = batch_means(legs["queue_s"].to_numpy())
    expected = erlang_c(c, lam / mu) / (c * mu - lam)
    assert_close_to(mean, se, expected)
    # And the fraction of customers that wait at all is the Erlang C probability itself.
    waited = (legs["queue_s"].to_numpy()[int(N_QUERIES * WARMUP):] > 1e-9).mean()
    assert waited == pytest.approx(erlang_c(c, lam / mu), abs=0.02)


def kiefer_wolfowitz_starts(reach: np.ndarray, service: np.ndarray, slots: int) -> np.ndarray:
    """FIFO c-server queue: in order of arrival, each job takes the slot that frees up first."""
    free = [0.0] * slots
    start = np.empty(len(reach))
    for i in np.argsort(reach, kind="stable"):
        s = max(reach[i], heapq.heappop(free))
        start[i] = s
        heapq.heappush(free, s + service[i])
    return start


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_slot_server_is_exact_fifo(write_scenario, write_profile, slots):
    """Every start time equals the direct FIFO recomputation (heavy load, so most jobs queue)."""
    n = 4000
    queries, legs = simulate_queue(write_scenario, write_profile, {"dist": "geometric", "mean": MEAN_TOKENS},
                                   rate=0.95 * slots * RATE / MEAN_TOKENS, queries=n, slots=slots, seed=7)
    assert (legs["query_id"].to_numpy() == queries["query_id"].to_numpy()).all()
    service = (legs["ttft_s"] + legs["decode_s"]).to_numpy()
    np.testing.assert_allclose(service, queries["output_tokens"].to_numpy() / RATE, rtol=0, atol=1e-9)
    reach = queries["arrival_s"].to_numpy() + legs["uplink_s"].to_numpy()
    expected = kiefer_wolfowitz_starts(reach, service, slots)
    start = legs["start_s"].to_numpy()
    assert (legs["queue_s"] > 0.1).mean() > 0.5  # the queue is really exercised
    np.testing.assert_allclose(start, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(legs["queue_s"], expected - reach, rtol=0, atol=1e-7)
    # Never more than `slots` jobs in service at once.
    events = np.r_[start, start + service]
    delta = np.r_[np.ones(n), -np.ones(n)]
    order = np.lexsort((delta, events))  # at equal times, ends (-1) before starts (+1)
    assert np.cumsum(delta[order]).max() <= slots
