"""Build the H200 device trace and its fitted profiles from the measured probe.

Input: ../shared/data/h200/probe_trace.csv and probe_device.json — one NVIDIA H200 (driver
580.159.04), HF transformers eager bf16, batch 1, greedy decode with KV cache, architecture-true
models with random weights; energy is the difference of NVML's total-energy counter around a
request (whole GPU, idle included).

Outputs:
- traces/devices/h200_probe.csv in the device-trace schema (traces/README.md): rep 0 of every
  shape is marked warm=false (first runs of a new shape were 3-6x slower); active_energy_J is
  derived as energy_J - idle_power_W * latency_s with the idle power NVML reported.
- traces/profiles/h200-<model>.yaml: DeviceProfile fitted on the warm rows (moe2sim.profiles.fit_profile),
  with a `batching` block: the probe ran batch 1 only, so the shared-device law is carried over (see
  `launch_bound_batching`) and labelled per value: prefill by the "tokens" law (the profile's own TTFT
  law at n times the prompt), decode slowdown and power growth assumed from a published launch-bound HF
  transformers batch sweep (A800), the power cap measured (NVML's enforced limit).

Run from the repository root: python traces/build/build_h200.py [--data DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from moe2sim.devices.concurrency import slope_per_extra_request
from moe2sim.devices.profiles import Batching, DeviceProfile, Sourced, fit_profile, measured_spread, save_profile

HERE = Path(__file__).resolve().parents[1]  # traces/
# What the probe ran: HF transformers eager, bf16 weights, default clocks, NVML board power (GPU only).
H200_STACK = dict(stack="transformers", quantisation="bf16", power_mode="default", energy_boundary="gpu")
MAX_BATCH = 8  # the batch range of the A800 sweep the slowdown and power growth are taken from
A800 = ("published_devices/ecocompute_rtx4090d_hf/raw/"
        "metadata_batch_size_experiment_a800_mistral7b_pure_int8_batch_size_summary_20260215_131345.csv")
A800_CITE = ("hongping-zh/ecocompute-dynamic-eval @ 12d7ad17d80f69fbd54ed9e86b2e68cc6a80144d, metadata/batch_size_experiment "
             "summary CSV (copy: shared/data/" + A800 + "): A800, Mistral-7B pure INT8, HF transformers generate, "
             "NVML GPU power, 10 runs per batch size")


def launch_bound_batching(profile: DeviceProfile, a800: pd.DataFrame, power_limit_W: float) -> Batching:
    """The shared-device law of an eager HF stack whose decode is bound by kernel launches, not by memory
    or compute (9–21 ms a token here for 1–8B): a batch of n decodes in about the batch-1 step time.
    - β_d, g: from the A800 sweep (batch 1, 2, 4, 8): r(n) = n S(1)/S(n) − 1 = β_d (n − 1) on throughput S;
      P(n) − P(1) = g_rel P(1) (n − 1), g = g_rel × this profile's decode power (a transfer: assumed).
    - prefill: the "tokens" law (a batch of n prompts of p tokens costs one prefill of n·p tokens under
      this profile's own TTFT law: no parameter; roofline profiles stay on the launch floor for short
      prompts and turn compute-bound past ttft_base_s · prefill_tokens_per_s tokens)."""
    sweep = a800[a800["batch_size"] <= MAX_BATCH]
    n, tput, power = (sweep[c].to_numpy(float) for c in ("batch_size", "throughput_tok_s", "avg_power_w"))
    beta_d = slope_per_extra_request(n, n * tput[0] / tput - 1)
    g_rel = slope_per_extra_request(n, power / power[0] - 1)
    decode_W = profile.decode_power_W.value
    tputs = " / ".join(f"{x:g}" for x in tput)
    powers = " / ".join(f"{x:g}" for x in power)
    sizes = " / ".join(f"{x:g}" for x in n)
    return Batching(
        max_batch=MAX_BATCH,
        decode_slowdown=Sourced(value=round(beta_d, 6), provenance="assumed", source=(
            f"{A800_CITE}: throughput {tputs} tok/s at batch {sizes}; least squares of n S(1)/S(n) - 1 = beta (n - 1) "
            f"-> {beta_d:.4f}. A launch-bound HF stack (A800: 19 tok/s, 45 % GPU utilisation) carried over to this "
            "H200 HF eager stack, also launch-bound at batch 1 (shared/data/README.md): assumed, not measured here")),
        prefill_law="tokens",
        power_growth_W=Sourced(value=round(g_rel * decode_W, 6), provenance="assumed", source=(
            f"{A800_CITE}: mean power {powers} W at batch {sizes}; least squares of P(n)/P(1) - 1 = g (n - 1) -> "
            f"{100 * g_rel:.2f} % of P(1) per extra request, x this profile's decode power {decode_W:.1f} W. "
            "Same stack family, another GPU: the transfer is assumed")),
        max_power_W=Sourced(value=power_limit_W, provenance="measured", source=(
            "NVML enforced power limit of the probed H200 (shared/data/h200/probe_device.json power_limit_mW)")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for devices/ and profiles/ (default: traces/)")
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
    out = args.out / "devices" / "h200_probe.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    trace.to_csv(out.with_suffix(".tmp"), index=False)
    out.with_suffix(".tmp").replace(out)
    idle = Sourced(value=round(idle_W, 2), provenance="measured",
                   source=f"NVML power reading averaged over 1 s at rest, {device['name']}, driver "
                          f"{device['driver']} (shared/data/h200/probe_device.json)")
    a800 = pd.read_csv(args.data / A800, skiprows=[1, 2], index_col=0).rename_axis("batch_size").reset_index()
    power_limit_W = float(device["power_limit_mW"]) / 1000
    how = ("least-squares fit (moe2sim.profiles.fit_profile) to the warm rows of traces/devices/h200_probe.csv, "
           "measured on one NVIDIA H200 with HF transformers eager bf16, batch 1")
    for model, rows in trace[trace["warm"]].groupby("model", sort=False):
        profile = fit_profile(rows, name=f"h200-{model}", device=f"{device['name']} (driver {device['driver']})",
                              model=f"{model} (architecture-true, bf16, HF transformers eager)", idle=idle, how=how,
                              **H200_STACK, spread=measured_spread(rows, "traces/devices/h200_probe.csv warm rows"))
        profile = profile.model_copy(update={"batching": launch_bound_batching(profile, a800, power_limit_W)})
        (args.out / "profiles").mkdir(exist_ok=True)
        save_profile(profile, args.out / "profiles" / f"h200-{model}.yaml")
        print(f"{model:14s} decode {profile.decode_tokens_per_s.value:6.1f} tok/s  "
              f"active {profile.decode_power_W.value - idle_W:5.1f} W  fit {profile.fit_error}  "
              f"batching {profile.batching.prefill_law} / {profile.batching.decode_slowdown.value:.4f} / "
              f"{profile.batching.power_growth_W.value:.2f} W")


if __name__ == "__main__":
    main()
