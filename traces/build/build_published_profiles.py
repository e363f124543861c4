"""Build the Jetson AGX Orin vLLM profiles from the published tables in traces/devices/sources/.

Source of the law (traces/devices/sources/README.md): Jetson AI Lab's `vllm bench serve` of Llama-3.1-8B
W4A16 on AGX Orin, random 2,048 in / 128 out, 50 prompts, output token throughput X(1) = 28.14 and
X(8) = 112.33 tok/s. Output throughput counts each request's TTFT, so at concurrency 1
    128 / X(1) = ttft(2048) + 128 / r_d                 (one request's whole time, 4.549 s)
splits between prefill and decode only with one more number: r_d = 40 tok/s, the published batch-1 MLC
decode of Llama-3-8B on the same module and mode (jetson_ai_lab_orin_mlc_decode.csv; a transfer of stack,
assumed, both 4-bit and below the ~42 tok/s LPDDR5 bound). With the assumed 0.03 s per-request overhead:
    r_p = 2048 / (128 / X(1) − 128 / r_d − 0.03)        (derived, ≈ 1,550 tok/s)
vLLM's continuous batching interleaves prefill chunks with decode steps, and two points identify one
slowdown only, so β_p = β_d = β, solved (bisection) so that the simulator's own serving benchmark
(moe2sim.sim.serving_bench: 50 requests, at most 8 in flight, the shared-device fluid model) gives X(8).
The 7B vLLM profile is the 8B one with decode scaled by the MLC Llama-2-7B / Llama-3-8B decode ratio
(47 / 40) and prefill by the parameter ratio 8.03 / 7.24 (compute-bound): derived, no 7B vLLM table exists.
Powers, spread and the other blocks of the profiles are kept as they are (their own sources).

Run from the repository root: python traces/build/build_published_profiles.py [--out DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from moe2sim.devices.profiles import DeviceProfile, Sourced, load_profile, save_profile
from moe2sim.sim.serving_bench import one_slowdown, solve_slowdown

HERE = Path(__file__).resolve().parents[1]  # traces/
SOURCES = HERE / "devices" / "sources"
VLLM_CITE = ("NVIDIA-AI-IOT/jetson-generative-ai-playground src/data/benchmarks.json @ "
             "658afbb8c342eea493b4bf206250711312dd6c55 (stored: traces/devices/sources/"
             "jetson_ai_lab_orin_vllm_concurrency.csv): Llama 3.1 8B W4A16, 'Jetson Orin' (AGX Orin 64GB MAXN "
             "inferred), vllm bench serve, random 2048 in / 128 out, 50 prompts, output token throughput")
MLC_CITE = ("Jetson AI Lab 'LLM Text Generation Rate' chart, AGX Orin 64GB MAXN, MLC 4-bit, batch 1 (stored: "
            "traces/devices/sources/jetson_ai_lab_orin_mlc_decode.csv)")
PROMPT, OUTPUT, REQUESTS = 2048, 128, 50   # the benchmark's shape (genai-benchmarking.md)
BASE_S = 0.03                              # assumed per-request overhead (HTTP, tokenise, schedule)
PARAMS_B = {"8b": 8.03, "7b": 7.24}        # Llama-3.1-8B, Mistral-7B / Llama-2-7B class parameters (billions)


def published_throughput(model: str = "Llama 3.1 8B") -> dict[int, float]:
    """Output token throughput (tok/s, all streams) by concurrency for `model` on Orin, from the stored table."""
    table = pd.read_csv(SOURCES / "jetson_ai_lab_orin_vllm_concurrency.csv")
    rows = table[(table["model"] == model) & (table["device"] == "orin")]
    return dict(zip(rows["concurrency"].astype(int), rows["output_tok_s_aggregate"].astype(float)))


def mlc_decode(model: str) -> float:
    table = pd.read_csv(SOURCES / "jetson_ai_lab_orin_mlc_decode.csv")
    return float(table.loc[table["model"] == model, "decode_tok_s"].iloc[0])


def orin_8b_vllm(base: DeviceProfile) -> DeviceProfile:
    x = published_throughput()
    r_d = mlc_decode("Llama-3-8B")
    ttft = OUTPUT / x[1] - OUTPUT / r_d
    r_p = PROMPT / (ttft - BASE_S)
    profile = base.model_copy(update={
        "notes": ("vLLM stack (ghcr.io/nvidia-ai-iot/vllm:latest-jetson-orin). Built by traces/build/"
                  "build_published_profiles.py from traces/devices/sources/: reproduces the published output "
                  f"throughput {x[1]:g} tok/s at concurrency 1 and {x[8]:g} at 8 (2,048 in / 128 out) through the "
                  "simulator's serving benchmark (tests/test_profile_sources.py)."),
        "ttft_base_s": Sourced(value=BASE_S, provenance="assumed",
                               source="fixed per-request overhead (HTTP, tokenise, schedule); no published Orin value"),
        "decode_tokens_per_s": Sourced(value=r_d, provenance="assumed", source=(
            f"published for another stack, {MLC_CITE}: Llama-3-8B {r_d:g} tok/s. MLC, not vLLM: the transfer is assumed (both 4-bit, "
            "both under the ~42 tok/s LPDDR5 bound of an 8B 4-bit model on this module)")),
        "prefill_tokens_per_s": Sourced(value=round(r_p, 3), provenance="derived", source=(
            f"{VLLM_CITE} {x[1]:g} tok/s at concurrency 1: one request takes {OUTPUT}/{x[1]:g} = "
            f"{OUTPUT / x[1]:.4f} s = ttft(2048) + {OUTPUT}/{r_d:g} (decode above), so ttft(2048) = {ttft:.4f} s and "
            f"prefill = 2048 / ({ttft:.4f} - {BASE_S}) = {r_p:.1f} tok/s")),
    })
    beta = solve_slowdown(profile, PROMPT, OUTPUT, 8, x[8], REQUESTS)
    return one_slowdown(profile, beta, (
        f"{VLLM_CITE} {x[8]:g} tok/s at concurrency 8: the one slowdown per extra running request, on prefill and "
        "decode alike (vLLM interleaves prefill chunks with decode steps; two published points identify one "
        f"parameter), at which the simulator's serving benchmark (moe2sim.sim.serving_bench, {REQUESTS} requests, "
        f"at most 8 in flight) gives {x[8]:g} tok/s: beta = {beta:.4f}"))


def orin_7b_vllm(base: DeviceProfile, eight: DeviceProfile) -> DeviceProfile:
    """The 8B profile scaled to a 7B (module docstring): decode × 47/40, prefill × 8.03/7.24, the same law."""
    decode_ratio = mlc_decode("Llama-2-7B") / mlc_decode("Llama-3-8B")
    param_ratio = PARAMS_B["8b"] / PARAMS_B["7b"]
    r_d, r_p = eight.decode_tokens_per_s.value * decode_ratio, eight.prefill_tokens_per_s.value * param_ratio
    return base.model_copy(update={
        "notes": ("vLLM stack. The 8B vLLM profile (jetson-agx-orin-64gb-8b-q4-vllm) scaled to 7B by "
                  "traces/build/build_published_profiles.py; no 7B vLLM table on Orin exists."),
        "ttft_base_s": eight.ttft_base_s,
        "decode_tokens_per_s": Sourced(value=round(r_d, 4), provenance="derived", source=(
            f"{eight.decode_tokens_per_s.value:g} tok/s of the 8B vLLM profile x {decode_ratio:.4f}, the MLC "
            f"Llama-2-7B / Llama-3-8B decode ratio on the same module ({MLC_CITE})")),
        "prefill_tokens_per_s": Sourced(value=round(r_p, 3), provenance="derived", source=(
            f"{eight.prefill_tokens_per_s.value:g} tok/s of the 8B vLLM profile x {PARAMS_B['8b']}/{PARAMS_B['7b']} "
            "parameters (prefill compute-bound)")),
        "batching": eight.batching,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "profiles", help="profile folder (default: traces/profiles)")
    args = parser.parse_args()
    names = {size: f"jetson-agx-orin-64gb-{size}-q4-vllm" for size in ("8b", "7b")}
    eight = orin_8b_vllm(load_profile(HERE / "profiles" / f"{names['8b']}.yaml"))
    seven = orin_7b_vllm(load_profile(HERE / "profiles" / f"{names['7b']}.yaml"), eight)
    for size, profile in (("8b", eight), ("7b", seven)):
        save_profile(profile, args.out / f"{names[size]}.yaml")
        print(f"{names[size]}: prefill {profile.prefill_tokens_per_s.value:.0f} tok/s, decode "
              f"{profile.decode_tokens_per_s.value:.2f} tok/s, beta {profile.batching.decode_slowdown.value:.4f}")


if __name__ == "__main__":
    main()
