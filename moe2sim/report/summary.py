"""Summary metrics from per-query and per-leg records (any source: simulator, environment, live run).

energy_J_per_query is the mean active energy of a query (what the MoE² energy budget bounds);
energy_J_total adds every device's idle power over the run length to the active energy.
Utilisation of an expert = its busy slot-seconds / (slots * run length).
Energies are within each expert's profile boundary (module rails, GPU board, wall plug):
energy_boundaries names each expert's, and mixed_boundaries is true when the totals add
energies measured within different boundaries (then they are not one physical quantity).

Intervals (`interval_block`): with R ≥ 2 replications every metric's interval is the Student-t interval
across the R runs (report/intervals.py), and every printed figure is the mean over the runs; with R = 1,
sectioning within the one run (per-query metrics only): the whole run's value, with an interval from
batches that span the queue's memory, each entry flagged `reliable: false` (and why) where the run is too
short for one. The summary says which in `interval_method` and lists the flagged metrics in
`intervals_unreliable`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from moe2sim.report.intervals import across, flatten, sectioned

if TYPE_CHECKING:
    from moe2sim.twin import Twin

BATCHES = 20
WARMUP = 0.05


def _mean_or_none(value: float) -> float | None:
    """A mean over nothing (an expert that served no leg, a run without queries) is null, not NaN."""
    return float(value) if np.isfinite(value) else None


def _latency(latency: pd.Series) -> dict[str, float | None]:
    values = latency.to_numpy(float)
    if not len(values):  # a run in which no query arrived
        return dict.fromkeys(("mean", "p50", "p95", "p99", "max"))
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(values.max())}


def _block(queries: pd.DataFrame) -> dict[str, Any]:
    lat_v = int(queries["latency_violation"].sum())
    en_v = int(queries["energy_violation"].sum())
    return {
        "queries": int(len(queries)),
        "accuracy": _mean_or_none(queries["correct"].mean()),
        "latency_s": _latency(queries["latency_s"]),
        "energy_J_per_query": _mean_or_none(queries["energy_J"].mean()),
        "energy_J_active_total": float(queries["energy_J"].sum()),
        "budget_violations": {
            "latency": lat_v, "energy": en_v,
            "any": int((queries["latency_violation"] | queries["energy_violation"]).sum()),
            "rate": _mean_or_none((queries["latency_violation"] | queries["energy_violation"]).mean()),
        },
    }


def query_metrics(queries: pd.DataFrame) -> dict[str, Any]:
    """The metrics of the queries alone (no run length, no legs): overall and per category. Batch means
    (report/intervals.py) compute these on consecutive batches of one run."""
    return {**_block(queries), "categories": {str(c): _block(g) for c, g in queries.groupby("category", observed=True)}}
def boundary_note(boundaries: dict[str, str], reason: str = "") -> tuple[str, str]:
    """(warning, note), one line each for reports: both '' when every expert shares one stated boundary; else
    the scenario's `reason` for mixing them as the note, or, without one, a warning."""
    kinds = sorted(set(boundaries.values()))
    if len(kinds) <= 1 and "unstated" not in kinds:
        return "", ""
    per = "; ".join(f"{k}: {', '.join(n for n, b in boundaries.items() if b == k)}" for k in kinds)
    if reason:
        return "", f"energy boundaries differ ({per}) on purpose: {' '.join(reason.split())}"
    return (f"energy totals add energies within different (or unstated) boundaries ({per}): "
            "not comparable across devices"), ""


def summarize(queries: pd.DataFrame, legs: pd.DataFrame, idle_power_W: dict[str, float],
              slots: dict[str, int], run_s: float, energy_boundary: dict[str, str] | None = None,
              mixed_boundaries: str = "") -> dict[str, Any]:
    """The summary.json contract: overall block, per category, per expert. `mixed_boundaries`: the scenario's
    reason for mixing energy boundaries (see boundary_note)."""
    boundaries = {name: (energy_boundary or {}).get(name, "unstated") for name in idle_power_W}
    overall = _block(queries)
    idle = {name: p * run_s for name, p in idle_power_W.items()}
    overall["energy_J_idle_total"] = float(sum(idle.values()))
    overall["energy_J_total"] = overall["energy_J_active_total"] + overall["energy_J_idle_total"]
    overall["run_s"] = float(run_s)
    overall["throughput_qps"] = float(len(queries) / run_s) if run_s > 0 else 0.0
    overall["categories"] = {str(c): _block(g) for c, g in queries.groupby("category", observed=True)}
    busy = (legs["ttft_s"] + legs["decode_s"]).groupby(legs["expert"], observed=False).sum()
    per_leg = legs.groupby("expert", observed=False)
    overall["experts"] = {
        name: {
            "legs": int(per_leg.size().get(name, 0)),
            "utilisation": float(busy.get(name, 0.0) / (slots[name] * run_s)) if run_s > 0 else 0.0,
            "queue_s_mean": _mean_or_none(per_leg["queue_s"].mean().get(name, np.nan)),
            "energy_J_active": float(per_leg["energy_J"].sum().get(name, 0.0)),
            "energy_J_idle": float(idle[name]),
            "energy_boundary": boundaries[name],
        }
        for name in idle_power_W
    }
    overall["energy_boundaries"] = boundaries
    overall["mixed_boundaries"] = len(set(boundaries.values())) > 1
    overall["energy_boundary_note"], overall["energy_boundary_reason"] = boundary_note(boundaries, mixed_boundaries)
    return overall


def run_summary(twin: Twin, queries: pd.DataFrame, legs: pd.DataFrame, run_s: float) -> dict[str, Any]:
    """summary.json's metrics of one run of `twin`, the run length at least the last finish."""
    return summarize(queries, legs, {e.name: e.idle_power_W for e in twin.experts},
                     {e.name: e.slots for e in twin.experts}, max(run_s, float(queries["finish_s"].max())),
                     {e.name: p.boundary for e, p in zip(twin.experts, twin.profiles)}, twin.scenario.mixed_boundaries)


def per_query_metrics(queries: pd.DataFrame) -> dict[str, Any]:
    """The metrics of summary.json that are averages or quantiles over queries (overall and per category):
    accuracy, latency_s (mean and percentiles), energy_J_per_query, budget_violations.rate. Counts and totals have no batch values."""
    def keep(block: dict[str, Any]) -> dict[str, Any]:
        return {"accuracy": block["accuracy"], "latency_s": {k: v for k, v in block["latency_s"].items() if k != "max"},
                "energy_J_per_query": block["energy_J_per_query"],
                "budget_violations": {"rate": block["budget_violations"]["rate"]}}

    metrics = query_metrics(queries)
    return {**keep(metrics), "categories": {c: keep(b) for c, b in metrics["categories"].items()}}


def interval_block(runs: list[dict[str, Any]], first_queries: pd.DataFrame) -> dict[str, Any]:
    """`interval_method`, `intervals` and `intervals_unreliable` for summary.json: across the runs if there are
    two or more, else sectioning of the one run's queries (the busiest slot's utilisation bounds how long the
    run remembers a busy spell)."""
    if len(runs) >= 2:
        return {"interval_method": f"replications ({len(runs)})",
                "intervals": across([flatten(r) for r in runs]), "intervals_unreliable": []}
    load = max((e.get("utilisation") or 0.0 for e in runs[0].get("experts", {}).values()), default=0.0)
    intervals = sectioned(first_queries, per_query_metrics, BATCHES, WARMUP, load=load)
    return {"interval_method": f"sectioning (whole-run estimate; up to {BATCHES} batches, each spanning 10 "
                               f"autocorrelation times; first {WARMUP:.0%} of queries dropped)",
            "intervals": intervals,
            "intervals_unreliable": sorted(k for k, v in intervals.items() if not v["reliable"])}


def replicated_summary(scenario_name: str, seeds: list[int], runs: list[dict[str, Any]],
                       first_queries: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """summary.json of R replications (replication 0's metrics at the top level, as a single run writes
    them, plus the interval block and the seeds; `seeds[0]` the scenario's seed) and replications.csv
    (one row of flattened metrics per replication)."""
    table = pd.DataFrame([{"replication": i, "seed": s, **flatten(r)} for i, (s, r) in enumerate(zip(seeds, runs))])
    summary = {"scenario": scenario_name, "seed": seeds[0], **runs[0], **interval_block(runs, first_queries),
               "replications": {"n": len(runs), "seeds": seeds}}
    return summary, table
