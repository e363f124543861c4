"""Device-model fidelity on data the fit never saw, beside the noise floor.

For every shipped device trace (default: traces/devices/*.csv):
- leave-one-shape-out (LOSO): for every model and (prompt, output) shape, fit on the model's other
  shapes and predict the held-out shape's rows (at every concurrency level the trace has). Split by
  shape, never by row, so no repetition of a held-out shape is seen. Batch-1 traces are fitted with
  moe2sim.devices.profiles.fit_profile; traces with a `concurrency` column with the shared-device
  law (moe2sim.devices.concurrency.fit_concurrency). Batch-1 traces also score replay
  (moe2sim.devices.service.TraceReplayService) of the held-out shape: its nearest shape rescaled by
  the fitted profile, and the same nearest shape unscaled (the replay before issue 14).
- leave-one-concurrency-out (LOCO, traces with several concurrency levels): fit without level n,
  predict its rows; beside it the independent-slot model (batch-1 fit on n = 1, no slowdown).
- noise floor: each warm row against the mean of its own shape (and concurrency): no model of the
  shape can do better on average.
A CPU trace with a `cpu_share` column (CPU seconds / wall seconds of the request) is scored twice: all
warm rows, and only those with cpu_share ≥ 0.8 (measured while no other job took the core).
MAPE, median absolute % error (robust to the load spikes of a shared machine) and bias (mean signed
% error, + = over-predicts) for latency, TTFT and energy (active, and
whole-device = active + idle × latency, where the trace has energy); the held-out shapes are also scored per
model, since a bias that flips sign by model cancels in the pooled row.

Then the published Orin vLLM table (traces/devices/sources/jetson_ai_lab_orin_vllm_concurrency.csv, a table the
law did not make): leave-one-model-out (moe2sim.sim.serving_bench.leave_one_model_out), the throughput at
concurrency 8 of each model predicted with β fitted on the other six, beside independent slots.

    python benchmarks/bench_fidelity.py [--trace PATH ...]
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.data.tables import DEVICE_TRACE_COLUMNS, read_table
from moe2sim.devices.concurrency import fit_concurrency
from moe2sim.devices.profiles import Sourced, fit_profile, load_profile
from moe2sim.devices.service import TraceReplayService
from moe2sim.sim.serving_bench import leave_one_model_out

ROOT = Path(__file__).resolve().parents[1]
QUANTITIES = ("latency", "ttft", "active_energy", "energy")
CLEAN_CPU_SHARE = 0.8  # CPU traces: also score the rows measured while the process had the core to itself


def read_trace(path: Path) -> tuple[pd.DataFrame, float]:
    """Warm rows of a device trace with latency / energy columns, and its idle power (NaN: no meter)."""
    latency_columns = {k: v for k, v in DEVICE_TRACE_COLUMNS.items() if k != "active_energy_J"}
    trace = read_table(path, latency_columns, "device trace", optional={"warm": "bool"})
    trace = trace[trace["warm"]] if "warm" in trace.columns else trace
    for column in ("energy_J", "active_energy_J"):
        trace[column] = pd.to_numeric(trace.get(column, np.nan), errors="coerce")
    if "concurrency" not in trace.columns:
        trace["concurrency"] = 1
    trace = trace.assign(latency=trace["ttft_s"] + trace["decode_s"], ttft=trace["ttft_s"],
                         active_energy=trace["active_energy_J"], energy=trace["energy_J"]).reset_index(drop=True)
    idle = float((trace["energy"] - trace["active_energy"]).sum(skipna=False) / trace["latency"].sum())
    return trace, idle


def predictions(model_fit, rows: pd.DataFrame, idle_W: float) -> pd.DataFrame:
    """Predicted latency, ttft and energies of the rows by a fitted profile or concurrency fit."""
    if hasattr(model_fit, "beta_decode"):
        ttft, dec = model_fit.predict(rows["prompt_tokens"], rows["output_tokens"], rows["concurrency"])
        active = np.full(len(rows), np.nan)
    else:
        ttft, dec = model_fit.ttft_s(rows["prompt_tokens"].to_numpy()), model_fit.decode_s(rows["output_tokens"].to_numpy())
        active = model_fit.active_energy_J(ttft, dec)
    return pd.DataFrame({"latency": ttft + dec, "ttft": ttft, "active_energy": active,
                         "energy": active + idle_W * (ttft + dec)}, index=rows.index)


def fit(rows: pd.DataFrame, idle_W: float):
    if rows["concurrency"].nunique() > 1 or (rows["concurrency"] > 1).any():
        return fit_concurrency(rows)
    latency_only = rows["active_energy_J"].isna().any()
    idle = Sourced(value=idle_W if np.isfinite(idle_W) else 0.0, provenance="measured", source="trace")
    power = Sourced(value=1.0, provenance="assumed", source="unused") if latency_only else None
    return fit_profile(rows, name="held-out", device="", model="", idle=idle, how="bench", power=power)


def score(pred: pd.DataFrame, real: pd.DataFrame) -> dict[str, float]:
    """MAPE, median APE and bias (%) per quantity; NaN where not measured."""
    out = {}
    for q in QUANTITIES:
        err = (pred[q] - real[q]) / real[q] * 100
        out[f"{q}_mape"] = float(err.abs().mean()) if err.notna().any() else np.nan
        out[f"{q}_bias"] = float(err.mean()) if err.notna().any() else np.nan
        out[f"{q}_mdape"] = float(err.abs().median()) if err.notna().any() else np.nan
    return out


def loso(trace: pd.DataFrame, idle_W: float) -> pd.DataFrame:
    preds = []
    for _, data in trace.groupby("model", sort=False):
        for (p, o), held in data.groupby(["prompt_tokens", "output_tokens"]):
            preds.append(predictions(fit(data.drop(held.index), idle_W), held, idle_W))
    return pd.concat(preds).loc[trace.index]


def loco(trace: pd.DataFrame, idle_W: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out concurrency predictions by the law, and by independent slots (batch-1 fit, β = 0)."""
    law, slots = [], []
    for _, data in trace.groupby("model", sort=False):
        batch1 = fit(data[data["concurrency"] == 1].assign(concurrency=1), idle_W)
        for n, held in data.groupby("concurrency"):
            law.append(predictions(fit(data.drop(held.index), idle_W), held, idle_W))
            slots.append(predictions(batch1, held.assign(concurrency=1), idle_W))
    return pd.concat(law).loc[trace.index], pd.concat(slots).loc[trace.index]


def replay_loso(path: Path, trace: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out shape by replay rescaled (now) and by the nearest shape unscaled (before): the mean of
    the replayed rows' values."""
    raw = pd.read_csv(path)
    rescaled, unscaled = [], []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # held-out edge shapes lie outside the remaining grid, by design
        train = Path(tmp) / "train.csv"
        for model, data in trace.groupby("model", sort=False):
            for (p, o), held in data.groupby(["prompt_tokens", "output_tokens"]):
                keep = (raw["model"] == model) & ~((raw["prompt_tokens"] == p) & (raw["output_tokens"] == o))
                raw[keep].to_csv(train, index=False)
                svc = TraceReplayService(train, str(model))
                shapes = svc.shape_keys
                near = np.argmin(((svc.log_shapes - np.log([p, o])) ** 2).sum(1))
                mine = svc.shape_of_row == near
                scale = [w / h for w, h in zip(svc.predict(np.array([p]), np.array([o])),
                                               svc.predict(shapes[near:near + 1, 0], shapes[near:near + 1, 1]))]
                base = {"ttft": svc.ttft[mine].mean(), "decode": svc.decode[mine].mean(),
                        "active_energy": svc.energy[mine].mean()}
                for out, k in ((rescaled, scale), (unscaled, [np.ones(1)] * 3)):
                    ttft, dec, act = base["ttft"] * k[0][0], base["decode"] * k[1][0], base["active_energy"] * k[2][0]
                    out.append(pd.DataFrame({"latency": ttft + dec, "ttft": ttft, "active_energy": act,
                                             "energy": np.nan}, index=held.index))
    return pd.concat(rescaled).loc[trace.index], pd.concat(unscaled).loc[trace.index]


def noise_floor(trace: pd.DataFrame) -> pd.DataFrame:
    keys = ["model", "prompt_tokens", "output_tokens", "concurrency"]
    return trace.groupby(keys)[list(QUANTITIES)].transform("mean")


def row(name: str, s: dict[str, float]) -> str:
    cells = []
    for q in QUANTITIES:
        m, md, b = s[f"{q}_mape"], s[f"{q}_mdape"], s[f"{q}_bias"]
        cells.append("–" if np.isnan(m) else f"{m:.1f} / {md:.1f} ({b:+.1f})")
    return f"| {name} | " + " | ".join(cells) + " |"


def report(path: Path, min_cpu_share: float | None = None) -> None:
    trace, idle = read_trace(path)
    title = path.name
    if min_cpu_share is not None:
        trace = trace[trace["cpu_share"] >= min_cpu_share].reset_index(drop=True)
        title += f", rows whose process got ≥ {min_cpu_share:.0%} of a core (uncontended)"
    levels = sorted(trace["concurrency"].unique())
    print(f"\n### {title}: {len(trace)} warm rows, {trace['model'].nunique()} model(s), "
          f"{trace.groupby(['prompt_tokens', 'output_tokens']).ngroups} shapes, concurrency {[int(n) for n in levels]}"
          + (f", idle {idle:.1f} W" if np.isfinite(idle) else ", no energy measured"))
    print("\n| held out | latency | TTFT | active energy | whole-device energy |")
    print("|---|---|---|---|---|")
    held_out = loso(trace, idle)
    print(row("leave-one-shape-out (fitted model)", score(held_out, trace)))
    if trace["model"].nunique() > 1:  # a bias that flips sign by model cancels in the pooled row
        for model, rows in trace.groupby("model", sort=False).groups.items():
            print(row(f"  LOSO, {model}", score(held_out.loc[rows], trace.loc[rows])))
    if len(levels) > 1:
        law, slots = loco(trace, idle)
        print(row("leave-one-concurrency-out (shared-device law)", score(law, trace)))
        upper = trace["concurrency"] > 1
        print(row("  same, rows at n > 1", score(law[upper], trace[upper])))
        print(row("  independent slots (batch-1 fit, β = 0), n > 1", score(slots[upper], trace[upper])))
        for n in levels:
            at = trace["concurrency"] == n
            print(row(f"  LOCO at n = {n}", score(law[at], trace[at])))
    else:
        rescaled, unscaled = replay_loso(path, trace)
        print(row("replay of a held-out shape, rescaled (now)", score(rescaled, trace)))
        print(row("replay of a held-out shape, nearest unscaled (before)", score(unscaled, trace)))
    print(row("noise floor (each row vs its shape's mean)", score(noise_floor(trace), trace)))
    print("\ncells: MAPE % / median APE % (bias %, + = over-predicts)")


def published_table_report() -> None:
    table = pd.read_csv(ROOT / "traces" / "devices" / "sources" / "jetson_ai_lab_orin_vllm_concurrency.csv")
    profile = load_profile(ROOT / "traces" / "profiles" / "jetson-agx-orin-64gb-8b-q4-vllm.yaml")
    held = leave_one_model_out(table, profile, 2048, 128)
    print("\n### published Orin vLLM table (2,048 in / 128 out): leave-one-model-out at concurrency 8\n")
    print("| held-out model | published tok/s | β own | β of the others | law tok/s (error %) | "
          "independent slots tok/s (error %) |")
    print("|---|---|---|---|---|---|")
    for r in held.itertuples():
        print(f"| {r.model} | {r.published:.2f} | {r.beta_own:.3f} | {r.beta_others:.3f} | {r.law:.1f} "
              f"({r.law_error_pct:+.1f}) | {r.slots:.1f} ({r.slots_error_pct:+.1f}) |")
    print(f"| mean absolute error % | | | | {held['law_error_pct'].abs().mean():.1f} | "
          f"{held['slots_error_pct'].abs().mean():.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", type=Path, nargs="*",
                        default=sorted((ROOT / "traces" / "devices").glob("*.csv")))
    for path in parser.parse_args().trace:
        report(path)
        if "cpu_share" in pd.read_csv(path, nrows=1).columns:  # a CPU trace on a shared machine
            report(path, CLEAN_CPU_SHARE)
    published_table_report()


if __name__ == "__main__":
    main()
