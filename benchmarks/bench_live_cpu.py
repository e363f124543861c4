"""Live vs simulated on this machine's CPU, end to end through the commands a user runs:

    hardware collect (tiny Llama, CPU) -> hardware fit -> 2 x hardware serve on loopback
    -> hardware live (scenario policy, real time) -> moe2sim run (same scenario) -> hardware compare

Each server gets one CPU thread, and the collection runs with one thread too, so the profile is
measured under the conditions the experts are served in (two servers on a 2-core machine).
There is no energy meter on this machine, so energy is not compared (NaN, never 0); the table
gives the latency errors per category and per expert.

    python benchmarks/bench_live_cpu.py [--queries 80] [--rate 1.0] [--work DIR]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, cwd=ROOT).stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=80)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-live-")))
    args = parser.parse_args()
    work = args.work
    hw = [sys.executable, "-m", "hardware"]
    run(*hw, "collect", "--backend", "hf:tiny-llama", "--meter", "none", "--device-name", "this CPU",
        "--shapes", "16x8,32x8,64x8,16x16,32x16,64x16,16x24,64x24", "--reps", "5", "--threads", "1", "--out", str(work / "trace.csv"))
    print(run(*hw, "fit", str(work / "trace.csv"), "--name", "cpu-tiny-llama", "--device-name", "this CPU",
              "--assume-power", "30", "--out", str(work / "cpu-tiny.yaml")).strip())
    scenario = {
        "name": "live-cpu", "seed": 1, "queries": args.queries, "data_dir": str(ROOT / "traces"),
        "experts": [{"name": "a", "model": "meta-llama/Meta-Llama-3-8B", "profile": str(work / "cpu-tiny.yaml")},
                    {"name": "b", "model": "cognitivecomputations/dolphin-2.9-llama3-8b",
                     "profile": str(work / "cpu-tiny.yaml")}],
        "categories": [
            {"name": "gsm8k", "mix": 0.5, "latency_budget_s": 2.0, "prompt_tokens": {"dist": "fixed", "mean": 32},
             "output_tokens": {"dist": "fixed", "mean": 16}},
            {"name": "arc_challenge", "mix": 0.5, "latency_budget_s": 2.0, "answer_options": 4,
             "prompt_tokens": {"dist": "fixed", "mean": 64}, "output_tokens": {"dist": "fixed", "mean": 8}}],
        "energy_budget_J": 100.0, "arrivals": {"process": "poisson", "rate_per_s": args.rate},
        "policy": {"name": "gate", "k": 2},
    }
    (work / "live.yaml").write_text(yaml.safe_dump(scenario))
    servers, endpoints = [], []
    try:
        for name in ("a", "b"):
            proc = subprocess.Popen([*hw, "serve", "--backend", "hf:tiny-llama", "--meter", "none", "--port", "0",
                                     "--threads", "1"],
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
            servers.append(proc)
            port = re.search(r":(\d+) ", proc.stdout.readline()).group(1)
            endpoints += ["--endpoint", f"{name}=http://127.0.0.1:{port}"]
        print(run(*hw, "live", str(work / "live.yaml"), *endpoints, "--out", str(work / "live")).strip())
    finally:
        for proc in servers:
            proc.terminate()
    run("moe2sim", "run", str(work / "live.yaml"), "--out", str(work / "sim"), "--quiet")
    print(run(*hw, "compare", str(work / "sim"), str(work / "live"), "--out", str(work / "compare")))
    print(f"(work folder: {work})")


if __name__ == "__main__":
    main()
