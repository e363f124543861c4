"""Profile fidelity: fit a device profile on some shapes of a measured trace, predict the others.

Leave-one-shape-out on the warm rows of a device trace (default: traces/devices/h200_probe.csv,
built from shared/data/h200/probe_trace.csv): for every model and every (prompt, output) shape,
fit moe2sim.profiles.fit_profile on the model's other shapes and predict the held-out shape's
latency and energy per query. Split by shape, never by row, so no repetition of a shape is seen
in training. Reports mean absolute percentage errors of latency, active energy and whole-device
energy (active + idle × latency), per model and overall. A trace collected without a meter
(energy NaN, e.g. `hardware collect --meter none` on a CPU) gets the latency columns only.

    python benchmarks/bench_fidelity.py [--trace traces/devices/h200_probe.csv]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.devices.profiles import Sourced, fit_profile
from moe2sim.data.tables import DEVICE_TRACE_COLUMNS, read_table

ROOT = Path(__file__).resolve().parents[1]


def held_out_errors(trace: pd.DataFrame, idle_W: float) -> pd.DataFrame:
    """Absolute % errors of every held-out warm row; energy errors are NaN where the trace has no energy."""
    rows = []
    idle = Sourced(value=idle_W if np.isfinite(idle_W) else 0.0, provenance="measured", source="trace")
    for model, data in trace.groupby("model", sort=False):
        latency_only = data["active_energy_J"].isna().any()  # then the profile's power is a placeholder
        power = Sourced(value=1.0, provenance="assumed", source="unused") if latency_only else None
        shapes = data[["prompt_tokens", "output_tokens"]].drop_duplicates().itertuples(index=False)
        for p, o in shapes:
            test = (data["prompt_tokens"] == p) & (data["output_tokens"] == o)
            prof = fit_profile(data[~test], name="loso", device="", model=str(model), idle=idle, how="loso",
                               power=power)
            held = data[test]
            ttft = prof.ttft_s(held["prompt_tokens"].to_numpy())
            dec = prof.decode_s(held["output_tokens"].to_numpy())
            lat = held["ttft_s"].to_numpy() + held["decode_s"].to_numpy()
            active = prof.active_energy_J(ttft, dec)
            for i in range(len(held)):
                rows.append({"model": model, "shape": f"{p}x{o}",
                             "latency_ape": abs(ttft[i] + dec[i] - lat[i]) / lat[i] * 100,
                             "active_energy_ape": abs(active[i] - held["active_energy_J"].iloc[i])
                             / held["active_energy_J"].iloc[i] * 100,
                             "energy_ape": abs(active[i] + idle_W * (ttft[i] + dec[i]) - held["energy_J"].iloc[i])
                             / held["energy_J"].iloc[i] * 100})
    return pd.DataFrame(rows)


def noise_floor(trace: pd.DataFrame, idle_W: float) -> pd.Series:
    """MAPE of predicting each warm row by the mean of its own shape's rows: no model of shape can do
    better on average (repetitions of one shape differ this much)."""
    t = trace.assign(latency=trace["ttft_s"] + trace["decode_s"])
    keys = ["model", "prompt_tokens", "output_tokens"]
    mean = t.groupby(keys)[["latency", "active_energy_J", "energy_J"]].transform("mean")
    return pd.Series({"latency_ape": (abs(mean["latency"] - t["latency"]) / t["latency"]).mean() * 100,
                      "active_energy_ape": (abs(mean["active_energy_J"] - t["active_energy_J"])
                                            / t["active_energy_J"]).mean() * 100,
                      "energy_ape": (abs(mean["energy_J"] - t["energy_J"]) / t["energy_J"]).mean() * 100})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", type=Path, default=ROOT / "traces" / "devices" / "h200_probe.csv")
    args = parser.parse_args()
    latency_columns = {k: v for k, v in DEVICE_TRACE_COLUMNS.items() if k != "active_energy_J"}
    trace = read_table(args.trace, latency_columns, "device trace", optional={"warm": "bool"})
    trace = trace[trace["warm"]] if "warm" in trace.columns else trace
    for column in ("energy_J", "active_energy_J"):
        trace[column] = pd.to_numeric(trace.get(column, np.nan), errors="coerce")
    idle_W = float((trace["energy_J"] - trace["active_energy_J"]).sum(skipna=False)
                   / (trace["ttft_s"] + trace["decode_s"]).sum())
    errors = held_out_errors(trace, idle_W)
    table = errors.groupby("model", sort=False)[["latency_ape", "active_energy_ape", "energy_ape"]].mean()
    table.loc["all models"] = errors[["latency_ape", "active_energy_ape", "energy_ape"]].mean()
    print(f"leave-one-shape-out on {args.trace.name}: {len(errors)} held-out warm rows, idle {idle_W:.1f} W")
    print("| model | latency MAPE % | active energy MAPE % | whole-device energy MAPE % |")
    print("|---|---|---|---|")
    for model, r in table.iterrows():
        print(f"| {model} | {r['latency_ape']:.1f} | {r['active_energy_ape']:.1f} | {r['energy_ape']:.1f} |")
    floor = noise_floor(trace, idle_W)
    print(f"| noise floor (each warm row vs its own shape's mean) | {floor['latency_ape']:.1f} | "
          f"{floor['active_energy_ape']:.1f} | {floor['energy_ape']:.1f} |")
    worst = errors.groupby(["model", "shape"])["latency_ape"].mean().idxmax()
    print(f"\nworst held-out shape for latency: {worst}")


if __name__ == "__main__":
    main()
