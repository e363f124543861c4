"""Per-query and per-leg records: one schema, built here for the simulator, the gym environment's
window meter and `hardware live`, so every report and comparison reads all three alike.

Per leg j of query i (an expert answering it):
    end_ij    = start_ij + ttft_ij + decode_ij                        (service ends on the expert)
    back_ij   = end_ij + downlink_ij                                  (answer back at the user)
    finish_i  = max_j back_ij + aggregation_s
A failed leg (live runs) counts with the time it gave up (`give_up_s`) instead of back_ij; a query whose
every leg failed finishes when its last leg gave up, with no aggregation. Link delays
unknown to a source (a live run) are NaN and count as 0 in these sums. Column meanings and units:
traces/README.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

QUERY_COLUMNS = ("query_id", "category", "prompt_id", "arrival_s", "finish_s", "latency_s", "prompt_tokens",
                 "output_tokens", "experts", "k", "score", "correct", "energy_J", "latency_budget_s",
                 "latency_violation", "energy_budget_J", "energy_violation", "subset", "predicted_worst_delay_s",
                 "predicted_worst_energy_J", "failed_legs", "error")
LEG_COLUMNS = ("query_id", "rank", "expert", "weight", "uplink_s", "queue_s", "ttft_s", "decode_s", "downlink_s",
               "start_s", "end_s", "energy_J", "attempts", "error", "server_ttft_s", "server_decode_s")


def leg_end(start_s: np.ndarray, ttft_s: np.ndarray, decode_s: np.ndarray) -> np.ndarray:
    return start_s + ttft_s + decode_s


def finish_times(start_s: np.ndarray, ttft_s: np.ndarray, decode_s: np.ndarray, downlink_s: np.ndarray,
                 aggregation_s: float) -> np.ndarray:
    """(n,) when each query's combined answer is ready, all legs answered (the simulator's case)."""
    return (leg_end(start_s, ttft_s, decode_s) + downlink_s).max(axis=1) + aggregation_s


@dataclass
class Legs:
    """A block of queries with their k legs each, as (n, k) arrays (n-vectors for per-query fields)."""

    query_id: np.ndarray
    category: np.ndarray          # (n,) category index
    prompt_id: np.ndarray
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    experts: np.ndarray           # (n, k) expert index, by descending weight
    weights: np.ndarray
    score: np.ndarray             # (n,) probability that the combined answer is right, given the experts chosen
    correct: np.ndarray           # (n,) bool: the combined answer was right (drawn)
    energy_J: np.ndarray          # (n, k) active energy
    uplink_s: np.ndarray
    queue_s: np.ndarray
    ttft_s: np.ndarray
    decode_s: np.ndarray
    downlink_s: np.ndarray
    start_s: np.ndarray
    latency_budget_s: np.ndarray  # (n,)
    energy_budget_J: np.ndarray   # (n,)
    subset: np.ndarray            # (n,) str
    predicted_worst_delay_s: np.ndarray
    predicted_worst_energy_J: np.ndarray
    failed: np.ndarray | None = None      # (n, k) bool: the leg gave no answer (live runs)
    give_up_s: np.ndarray | None = None   # (n, k) when a failed leg gave up
    attempts: np.ndarray | None = None    # (n, k)
    error: np.ndarray | None = None       # (n, k) str
    server_ttft_s: np.ndarray | None = None
    server_decode_s: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # source-specific leg columns

    def tables(self, names: list[str] | np.ndarray, aggregation_s: float) -> tuple[dict, dict]:
        """Columns of the query and leg tables, in QUERY_COLUMNS / LEG_COLUMNS order."""
        n, k = self.experts.shape
        end = leg_end(self.start_s, self.ttft_s, self.decode_s)
        back = end + np.nan_to_num(self.downlink_s)
        failed = np.zeros((n, k), bool) if self.failed is None else self.failed
        if failed.any():
            last = np.where(failed, self.give_up_s, back).max(axis=1)
            finish = last + np.where(failed.all(axis=1), 0.0, aggregation_s)
        else:
            finish = back.max(axis=1) + aggregation_s
        latency = finish - self.arrival_s
        energy = self.energy_J.sum(axis=1)
        names = np.asarray(names)
        error = np.full((n, k), "", object) if self.error is None else self.error
        query = {
            "query_id": self.query_id, "category": self.category, "prompt_id": self.prompt_id,
            "arrival_s": self.arrival_s, "finish_s": finish, "latency_s": latency,
            "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
            "experts": ["|".join(r) for r in names[self.experts]], "k": np.full(n, k), "score": self.score,
            "correct": self.correct, "energy_J": energy, "latency_budget_s": self.latency_budget_s,
            "latency_violation": latency > self.latency_budget_s, "energy_budget_J": self.energy_budget_J,
            "energy_violation": energy > self.energy_budget_J, "subset": self.subset,
            "predicted_worst_delay_s": self.predicted_worst_delay_s,
            "predicted_worst_energy_J": self.predicted_worst_energy_J,
            "failed_legs": failed.sum(axis=1),
            "error": ["; ".join(f"{names[x]}: {e}" for x, e in zip(ex, row) if e) for ex, row in zip(self.experts, error)]
            if self.error is not None else np.full(n, ""),
        }
        leg = {
            "query_id": np.repeat(self.query_id, k), "rank": np.tile(np.arange(k), n),
            "expert": self.experts.ravel(), "weight": self.weights.ravel(), "uplink_s": self.uplink_s.ravel(),
            "queue_s": self.queue_s.ravel(), "ttft_s": self.ttft_s.ravel(), "decode_s": self.decode_s.ravel(),
            "downlink_s": self.downlink_s.ravel(), "start_s": self.start_s.ravel(),
            "end_s": np.where(failed, self.give_up_s if self.give_up_s is not None else np.nan, end).ravel(),
            "energy_J": self.energy_J.ravel(),
            "attempts": (np.ones((n, k), np.int64) if self.attempts is None else self.attempts).ravel(),
            "error": error.ravel(),
            "server_ttft_s": _or_nan(self.server_ttft_s, (n, k)), "server_decode_s": _or_nan(self.server_decode_s, (n, k)),
            **{c: v.ravel() for c, v in self.extra.items()},
        }
        return query, leg


def _or_nan(values: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    return np.full(shape[0] * shape[1], np.nan) if values is None else np.asarray(values, float).ravel()


def frames(blocks: list[tuple[dict, dict]], categories: list[str], names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate table blocks into the per-query and per-leg DataFrames."""
    if not blocks:
        raise ValueError("no queries to record")
    queries = pd.DataFrame({c: np.concatenate([np.asarray(q[c]) for q, _ in blocks]) for c in blocks[0][0]})
    legs = pd.DataFrame({c: np.concatenate([np.asarray(g[c]) for _, g in blocks]) for c in blocks[0][1]})
    queries["category"] = pd.Categorical.from_codes(queries["category"].astype(np.int64), categories)
    legs["expert"] = pd.Categorical.from_codes(legs["expert"].astype(np.int64), names)
    return queries, legs
