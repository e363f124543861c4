"""Fitting the shared-device law to a device trace measured at several concurrency levels.

A trace row at concurrency n is one of n equal requests started together and served together
(n stays n for the whole request), so the law of moe2sim.devices.batching_law predicts
    decode(n, o) = o / decode_tokens_per_s · (1 + β_d (n − 1) + κ (n − 1) p / 1000)   (κ: the others' contexts)
    ttft(n, p)   = (ttft_base_s + p / prefill_tokens_per_s) · (1 + β_p (n − 1))     prefill_law "slowdown"
                 =  ttft_base_s + n p / prefill_tokens_per_s                         prefill_law "tokens"
Decode is linear in (1/r_d, β_d/r_d, κ/r_d); κ is kept only where it cuts the decode error by at least
1 − CONTEXT_GAIN (else κ = 0, the plain law). The "tokens" TTFT is linear in (a, 1/r_p); the "slowdown" TTFT is
linear in them for a given β_p, which is found by a 1-D search (a grid, then a finer one around its
best). All minimise squared relative error, as fit_profile does. The "tokens" law has no parameter for
concurrency, so β_p is kept only where it cuts the TTFT error by at least 1 − SLOWDOWN_GAIN. The batch-1
TTFT here is the additive law: a profile whose batch-1 fit chose the roofline law (moe2sim.devices.profiles)
still gets its prefill law from this additive form. Power growth g needs measured energy at several n; a
trace without a meter (energy NaN) fits latency only. A trace with one concurrency level gives β = 0 and
the "slowdown" law (nothing identified).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from moe2sim.devices.profiles import TTFT_LAWS, Batching, PrefillLaw, Sourced

SLOWDOWN_GAIN = 0.8  # β_p is kept only if its TTFT relative SSE is below this share of the "tokens" law's
CONTEXT_GAIN = 0.8   # κ is kept only if the decode relative SSE with it is below this share of the SSE without


@dataclass(frozen=True)
class ConcurrencyFit:
    ttft_base_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    beta_prefill: float
    beta_decode: float
    prefill_law: PrefillLaw = "slowdown"
    kappa_decode: float = 0.0

    def predict(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                concurrency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ttft_s, decode_s) of each request of a batch of n equal requests served together."""
        n = np.asarray(concurrency, float)
        extra = n - 1
        p = np.asarray(prompt_tokens, float)
        if self.prefill_law == "tokens":  # one additive-law prefill of n · p tokens
            ttft = TTFT_LAWS["additive"](self.ttft_base_s, self.prefill_tokens_per_s, n * p)
        else:
            ttft = (self.ttft_base_s + p / self.prefill_tokens_per_s) * (1 + self.beta_prefill * extra)
        decode = (np.asarray(output_tokens, float) / self.decode_tokens_per_s
                  * (1 + self.beta_decode * extra + self.kappa_decode * extra * p / 1000))
        return ttft, decode


def _rel_lstsq(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients minimising Σ ((x·c − y) / y)², and that sum."""
    a = x / y[:, None]
    coef, *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
    return coef, float(((a @ coef - 1) ** 2).sum())


def _ttft_fit(p: np.ndarray, extra: np.ndarray, ttft: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    s = 1 + beta * extra
    return _rel_lstsq(np.c_[s, p * s], ttft)


def fit_concurrency(trace: pd.DataFrame) -> ConcurrencyFit:
    """Fit the law to rows with prompt_tokens, output_tokens, ttft_s, decode_s and concurrency (default 1)."""
    p = trace["prompt_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    n = trace["concurrency"].to_numpy(float) if "concurrency" in trace.columns else np.ones(len(trace))
    extra = n - 1
    ttft, dec = trace["ttft_s"].to_numpy(float), trace["decode_s"].to_numpy(float)
    several = len(np.unique(n)) > 1
    kappa = 0.0
    if several:
        (d1, d2), plain_sse = _rel_lstsq(np.c_[o, o * extra], dec)
        (c1, c2, c3), context_sse = _rel_lstsq(np.c_[o, o * extra, o * extra * p / 1000], dec)
        if context_sse < CONTEXT_GAIN * plain_sse and c1 > 0 and c2 >= 0 and c3 > 0:
            d1, d2, kappa = c1, c2, float(c3 / c1)
        grid = np.linspace(0.0, 3.0, 301)
        best = grid[np.argmin([_ttft_fit(p, extra, ttft, b)[1] for b in grid])]
        fine = np.linspace(max(best - 0.01, 0.0), best + 0.01, 201)
        beta_p = float(fine[np.argmin([_ttft_fit(p, extra, ttft, b)[1] for b in fine])])
    else:
        (d1,), _ = _rel_lstsq(o[:, None], dec)
        d2, beta_p = 0.0, 0.0
    (a, inv_prefill), slowdown_sse = _ttft_fit(p, extra, ttft, beta_p)
    law: PrefillLaw = "slowdown"
    if several:
        (a_t, inv_t), tokens_sse = _rel_lstsq(np.c_[np.ones_like(p), n * p], ttft)
        if slowdown_sse >= SLOWDOWN_GAIN * tokens_sse and a_t >= 0 and inv_t > 0:
            law, a, inv_prefill, beta_p = "tokens", a_t, inv_t, 0.0
    return ConcurrencyFit(ttft_base_s=max(float(a), 0.0), prefill_tokens_per_s=1.0 / max(float(inv_prefill), 1e-12),
                          decode_tokens_per_s=1.0 / float(d1), beta_prefill=beta_p,
                          beta_decode=max(float(d2 / d1), 0.0), prefill_law=law, kappa_decode=kappa)


def slope_per_extra_request(n: np.ndarray, y: np.ndarray) -> float:
    """Least-squares β of y = β (n − 1): how a per-level quantity grows per extra running request."""
    return float(np.sum(y * (n - 1)) / max(np.sum((n - 1) ** 2), 1e-12))


def batching_block(trace: pd.DataFrame, how: str) -> Batching:
    """The profile's batching block from a trace with several concurrency levels: β_d (and κ where kept) and
    the prefill law (with β_p where it is "slowdown") fitted (fit_concurrency); max_batch = the highest level measured;
    g, where the trace has energy, from the device's active power per level,
    n · mean(active_energy_J / latency) = P(n) − P_idle, by least squares of P(n) − P(1) on (n − 1);
    else 0, labelled assumed."""
    law = fit_concurrency(trace)
    n = trace["concurrency"].to_numpy(float)
    derived = dict(provenance="derived", source=f"{how} (moe2sim.devices.concurrency.fit_concurrency)")
    energy = trace["active_energy_J"].to_numpy(float) if "active_energy_J" in trace.columns else np.full(len(n), np.nan)
    if np.isfinite(energy).all():
        power = n * energy / (trace["ttft_s"] + trace["decode_s"]).to_numpy(float)
        levels = np.unique(n)
        per_level = np.array([power[n == k].mean() for k in levels])
        growth = Sourced(value=max(slope_per_extra_request(levels, per_level - per_level[0]), 0.0), **derived)
    else:
        growth = Sourced(value=0.0, provenance="assumed", source=f"{how}: no energy measured, power growth unknown")
    prefill = ({"prefill_slowdown": Sourced(value=law.beta_prefill, **derived)} if law.prefill_law == "slowdown"
               else {})
    context = ({"decode_slowdown_per_kilotoken": Sourced(value=law.kappa_decode, **derived)} if law.kappa_decode
               else {})
    return Batching(max_batch=int(n.max()), decode_slowdown=Sourced(value=law.beta_decode, **derived), **context,
                    prefill_law=law.prefill_law, **prefill, power_growth_W=growth)
