"""Build the H200 device trace and its fitted profiles from the measured probe.

Input: ../shared/data/h200/probe_trace.csv and probe_device.json — one NVIDIA H200 (driver
580.159.04), HF transformers eager bf16, batch 1, greedy decode with KV cache, architecture-true
models with random weights; energy is the difference of NVML's total-energy counter around a
request (whole GPU, idle included).

Outputs:
- traces/devices/h200_probe.csv in the device-trace schema (traces/README.md): rep 0 of every
  shape is marked warm=false (first runs of a new shape were 3-6x slower); active_energy_J is
  derived as energy_J - idle_power_W * latency_s with the idle power NVML reported.
- traces/profiles/h200-<model>.yaml: DeviceProfile fitted on the warm rows (moe2sim.profiles.fit_profile).

Run from the repository root: python traces/build_h200.py [--data DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from moe2sim.devices.profiles import Sourced, fit_profile, measured_spread, save_profile

HERE = Path(__file__).resolve().parents[1]  # traces/
# What the probe ran: HF transformers eager, bf16 weights, default clocks, NVML board power (GPU only).
H200_STACK = dict(stack="transformers", quantisation="bf16", power_mode="default", energy_boundary="gpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    probe = args.data / "h200"
    device = json.loads((probe / "probe_device.json").read_text())
    idle_W = float(device["idle_power_W"])
    raw = pd.read_csv(probe / "probe_trace.csv")
    trace = pd.DataFrame({
        "device": raw["device"], "model": raw["model"], "params": raw["params"],
        "prompt_tokens": raw["in_tokens"], "output_tokens": raw["out_tokens"], "rep": raw["rep"],
        "warm": raw["rep"] > 0,
        "ttft_s": raw["ttft_s"], "decode_s": raw["decode_s"], "latency_s": raw["latency_s"],
        "energy_J": raw["energy_J"],
        "active_energy_J": (raw["energy_J"] - idle_W * raw["latency_s"]).round(3),
    })
    out = HERE / "devices" / "h200_probe.csv"
    out.parent.mkdir(exist_ok=True)
    trace.to_csv(out.with_suffix(".tmp"), index=False)
    out.with_suffix(".tmp").replace(out)
    idle = Sourced(value=round(idle_W, 2), provenance="measured",
                   source=f"NVML power reading averaged over 1 s at rest, {device['name']}, driver "
                          f"{device['driver']} (shared/data/h200/probe_device.json)")
    how = ("least-squares fit (moe2sim.profiles.fit_profile) to the warm rows of traces/devices/h200_probe.csv, "
           "measured on one NVIDIA H200 with HF transformers eager bf16, batch 1")
    for model, rows in trace[trace["warm"]].groupby("model", sort=False):
        profile = fit_profile(rows, name=f"h200-{model}", device=f"{device['name']} (driver {device['driver']})",
                              model=f"{model} (architecture-true, bf16, HF transformers eager)", idle=idle, how=how,
                              **H200_STACK, spread=measured_spread(rows, "traces/devices/h200_probe.csv warm rows"))
        save_profile(profile, HERE / "profiles" / f"h200-{model}.yaml")
        print(f"{model:14s} decode {profile.decode_tokens_per_s.value:6.1f} tok/s  "
              f"active {profile.decode_power_W.value - idle_W:5.1f} W  fit {profile.fit_error}")


if __name__ == "__main__":
    main()
