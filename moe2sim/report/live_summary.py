"""The summary of a live run (`hardware live`) over its records: the simulator's summary over the queries
that succeeded, plus the failures counted apart (per category and per expert), whether the run was
interrupted, and its exit code (130 interrupted; 3 more failed legs than allowed; else 0). Energy that was
not measured is null with `energy_reason`, never 0."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from moe2sim.data.strict import strict
from moe2sim.report.summary import run_summary

if TYPE_CHECKING:
    from moe2sim.twin import Twin


NO_ENERGY = "not measured: an endpoint reported no energy (no meter there, or a failed leg)"


class RunState(Protocol):
    """What a live run knows beyond its records: how many queries it planned and sent, whether it was
    interrupted, and its clock (seconds since the start)."""

    planned: int
    sent: int
    interrupted: bool

    def clock(self) -> float: ...


def live_summary(twin: Twin, run: RunState, queries: pd.DataFrame, legs: pd.DataFrame,
                 max_failed_fraction: float) -> dict[str, Any]:
    """The simulator's summary over the queries that succeeded, plus the failures counted apart:
    failed_queries / failed_legs (per category and per expert), interrupted, exit_code. Energy that
    was not measured is null with `energy_reason`, never 0."""
    names = [e.name for e in twin.experts]
    cats = [c.name for c in twin.scenario.categories]
    failed_q = queries["error"] != "" if len(queries) else pd.Series(dtype=bool)
    ok_ids = set(queries.loc[~failed_q, "query_id"]) if len(queries) else set()
    ok_q = queries[~failed_q] if len(queries) else queries
    ok_legs = legs[legs["query_id"].isin(ok_ids)] if len(legs) else legs
    run_s = float(queries["finish_s"].max()) if len(queries) else run.clock()
    if len(ok_q):
        summary = {"scenario": twin.scenario.name, "seed": twin.scenario.seed, **run_summary(twin, ok_q, ok_legs, run_s)}
    else:
        summary = {"scenario": twin.scenario.name, "seed": twin.scenario.seed, "queries": 0, "accuracy": None,
                   "latency_s": None, "run_s": run_s, "categories": {}, "experts": {n: {"legs": 0} for n in names}}
    leg_failed = legs["error"] != "" if len(legs) else pd.Series(dtype=bool)
    leg_cat = (legs[["query_id"]].merge(queries[["query_id", "category"]], on="query_id", how="left")["category"]
               .astype(str).to_numpy() if len(legs) else np.array([]))
    n_legs, n_failed = int(len(legs)), int(leg_failed.sum())
    failed_fraction = n_failed / n_legs if n_legs else 0.0
    per_expert = {n: int((leg_failed & (legs["expert"].astype(str) == n)).sum()) if n_legs else 0 for n in names}
    per_cat_legs = {c: int((leg_failed.to_numpy() & (leg_cat == c)).sum()) if n_legs else 0 for c in cats}
    per_cat_q = {c: int((failed_q & (queries["category"].astype(str) == c)).sum()) if len(queries) else 0
                 for c in cats}
    summary["queries"] = int(len(ok_q))  # the statistics' population: queries that succeeded
    summary.update({
        "status": "interrupted" if run.interrupted else "complete", "interrupted": run.interrupted,
        "queries_planned": run.planned, "queries_sent": run.sent, "queries_recorded": int(len(queries)),
        "queries_succeeded": int(len(ok_q)),
        "failed_queries": {"total": int(failed_q.sum()) if len(queries) else 0, "per_category": per_cat_q},
        "failed_legs": {"total": n_failed, "legs": n_legs, "fraction": failed_fraction, "per_expert": per_expert,
                        "per_category": per_cat_legs},
        "max_failed_fraction": max_failed_fraction,
        "statistics_note": "accuracy, latency and energy are over the queries that succeeded; failed queries "
                           "(any leg failed after its retries) are counted in failed_queries / failed_legs",
    })
    for n, block in summary["experts"].items():
        block["failed_legs"] = per_expert.get(n, 0)
        block["attempts"] = int(legs.loc[legs["expert"].astype(str) == n, "attempts"].sum()) if n_legs else 0
    for c, block in summary.get("categories", {}).items():
        block["failed_queries"] = per_cat_q.get(c, 0)
        block["failed_legs"] = per_cat_legs.get(c, 0)
    measured = len(ok_q) > 0 and bool(np.isfinite(ok_q["energy_J"].to_numpy(float)).all())
    if not measured:  # pandas sums NaN to 0: say "not measured" instead
        summary["energy_reason"] = NO_ENERGY
        for key in ("energy_J_per_query", "energy_J_active_total", "energy_J_total"):
            if key in summary:
                summary[key] = None
        for block in summary.get("categories", {}).values():
            block["energy_J_per_query"] = block["energy_J_active_total"] = None
        for block in summary["experts"].values():
            if "energy_J_active" in block:
                block["energy_J_active"] = None
    else:
        summary["energy_reason"] = None
    code = 130 if run.interrupted else (3 if failed_fraction > max_failed_fraction else 0)
    summary["exit_code"] = code
    return strict(summary)
