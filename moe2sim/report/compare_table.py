"""`hardware compare`'s statistics: simulated vs measured (live or collected) records of the same workload ->
error table (mean and p95 latency, energy per query; per category and per expert).

Per expert, the service time (TTFT + decode) is also split the way LLM-serving benchmarks report
it, TTFT and time per output token (decode / (output tokens − 1)), next to the wait in the
expert's queue, so an end-to-end error can be traced to the profile or to the queueing.

Errors are signed relative errors, (simulated − measured) / measured, in %. Energy is compared
only where the measured side has it (a run without a meter has NaN energy, reported as such).

Failed queries and legs of a live run (a non-empty `error`) are excluded from the measured side,
visibly: the `n_failed` column counts them per row and `failures()` says how many were left out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.errors import InputError


def read_records(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run folder's query and leg records (parquet or CSV; an empty `error` read back as '')."""
    folder = Path(folder)
    tables = []
    for stem in ("queries", "legs"):
        found = [p for p in (folder / f"{stem}.parquet", folder / f"{stem}.csv") if p.exists()]
        if not found:
            raise InputError(folder, stem, f"no {stem}.parquet or {stem}.csv (not a run folder)")
        table = pd.read_parquet(found[0]) if found[0].suffix == ".parquet" else pd.read_csv(found[0])
        if "error" in table.columns:  # CSV reads an empty error as NaN
            table["error"] = table["error"].fillna("").astype(str)
        tables.append(table)
    return tables[0], tables[1]


def _failed(table: pd.DataFrame) -> pd.Series:
    return table["error"] != "" if "error" in table.columns else pd.Series(False, index=table.index)


def failures(real_dir: str | Path) -> dict[str, int]:
    """How many measured queries and legs failed (and are left out of the comparison)."""
    rq, rl = read_records(real_dir)
    return {"queries": int(len(rq)), "failed_queries": int(_failed(rq).sum()),
            "legs": int(len(rl)), "failed_legs": int(_failed(rl).sum())}


def _pct(sim: float, real: float) -> float:
    return float((sim - real) / real * 100) if real and np.isfinite(real) and np.isfinite(sim) else np.nan


def error_table(sim_dir: str | Path, real_dir: str | Path) -> pd.DataFrame:
    """Per level (all, category, expert service time, queue wait, TTFT, time per output token): simulated and
    measured mean and p95 latency and mean energy, and their signed relative errors in %."""
    sq, sl = read_records(sim_dir)
    rq_all, rl_all = read_records(real_dir)
    q_failed, l_failed = _failed(rq_all), _failed(rl_all)
    # a failed query's latency is a give-up time and its legs' timings are partial: left out, counted
    rq, rl = rq_all[~q_failed], rl_all[~rl_all["query_id"].isin(rq_all.loc[q_failed, "query_id"])]
    rows = []

    def add(level: str, name: str, s_lat: pd.Series, r_lat: pd.Series, s_e: pd.Series | None = None,
            r_e: pd.Series | None = None, n_failed: int = 0) -> None:
        s_e, r_e = (pd.Series(dtype=float) if e is None else e for e in (s_e, r_e))
        r_lat, r_e = r_lat.dropna(), r_e.dropna()
        row = {"level": level, "name": name, "n_sim": len(s_lat), "n_measured": len(r_lat), "n_failed": n_failed,
               "latency_mean_sim_s": s_lat.mean(), "latency_mean_measured_s": r_lat.mean(),
               "latency_p95_sim_s": s_lat.quantile(0.95), "latency_p95_measured_s": r_lat.quantile(0.95),
               "energy_mean_sim_J": s_e.mean(), "energy_mean_measured_J": r_e.mean() if len(r_e) else np.nan}
        row["latency_mean_err_pct"] = _pct(row["latency_mean_sim_s"], row["latency_mean_measured_s"])
        row["latency_p95_err_pct"] = _pct(row["latency_p95_sim_s"], row["latency_p95_measured_s"])
        row["energy_mean_err_pct"] = _pct(row["energy_mean_sim_J"], row["energy_mean_measured_J"])
        rows.append(row)

    add("all", "all", sq["latency_s"], rq["latency_s"], sq["energy_J"], rq["energy_J"], int(q_failed.sum()))
    for cat in sorted(set(sq["category"].astype(str)) | set(rq_all["category"].astype(str))):
        s, r = sq[sq["category"].astype(str) == cat], rq[rq["category"].astype(str) == cat]
        add("category", cat, s["latency_s"], r["latency_s"], s["energy_J"], r["energy_J"],
            int((q_failed & (rq_all["category"].astype(str) == cat)).sum()))
    s_service = sl["ttft_s"] + sl["decode_s"]
    r_service = rl["ttft_s"] + rl["decode_s"]
    s_tpot, r_tpot = time_per_output_token(sq, sl), time_per_output_token(rq, rl)
    for expert in sorted(set(sl["expert"].astype(str)) | set(rl_all["expert"].astype(str))):
        sm, rm = sl["expert"].astype(str) == expert, rl["expert"].astype(str) == expert
        failed_legs = int((l_failed & (rl_all["expert"].astype(str) == expert)).sum())
        add("expert (service time)", expert, s_service[sm], r_service[rm], sl["energy_J"][sm], rl["energy_J"][rm],
            failed_legs)
        add("expert (queue wait)", expert, sl["queue_s"][sm], rl["queue_s"][rm])
        add("expert (TTFT)", expert, sl["ttft_s"][sm], rl["ttft_s"][rm])
        add("expert (time per output token)", expert, s_tpot[sm], r_tpot[rm])
    return pd.DataFrame(rows)


def time_per_output_token(queries: pd.DataFrame, legs: pd.DataFrame) -> pd.Series:
    """Each leg's decode time per token after the first (the first comes with the TTFT)."""
    tokens = legs[["query_id"]].merge(queries[["query_id", "output_tokens"]], on="query_id", how="left")
    return pd.Series(legs["decode_s"].to_numpy() / np.maximum(tokens["output_tokens"].to_numpy() - 1, 1),
                     index=legs.index)


def markdown(table: pd.DataFrame) -> str:
    cols = ["level", "name", "n_measured", "n_failed", "latency_mean_measured_s", "latency_mean_err_pct",
            "latency_p95_measured_s", "latency_p95_err_pct", "energy_mean_measured_J", "energy_mean_err_pct"]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "\n".join("| " + " | ".join(fmt(r[c]) for c in cols) + " |" for _, r in table.iterrows())


def failures_note(lost: dict[str, int]) -> str:
    return (f"measured: {lost['failed_queries']} of {lost['queries']} queries failed ({lost['failed_legs']} of "
            f"{lost['legs']} legs) and are excluded from the comparison (n_failed column)")
