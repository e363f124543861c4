"""Live vs simulated on this machine's CPU, end to end through the commands a user runs:

    2 x hardware serve (tiny Llama, CPU, loopback) -> hardware collect through the first endpoint
    -> hardware fit -> hardware live (scenario policy, real time) -> moe2sim run (same scenario)
    -> hardware compare

The profile is collected through a served endpoint (client-side timing), so it includes what
serving adds (HTTP, streaming); each server has one CPU thread (two servers on a 2-core machine).
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
HW = [sys.executable, "-m", "hardware"]


def run(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, cwd=ROOT).stdout


def scenario(profile: Path, queries: int, rate: float) -> dict:
    """Two experts on the served tiny model, short prompts and answers, Poisson arrivals."""
    return {
        "name": "live-cpu", "seed": 1, "queries": queries, "data_dir": str(ROOT / "traces"),
        "experts": [{"name": "a", "model": "meta-llama/Meta-Llama-3-8B", "profile": str(profile)},
                    {"name": "b", "model": "cognitivecomputations/dolphin-2.9-llama3-8b", "profile": str(profile)}],
        "categories": [
            {"name": "gsm8k", "mix": 0.5, "latency_budget_s": 2.0, "prompt_tokens": {"dist": "fixed", "mean": 32},
             "output_tokens": {"dist": "fixed", "mean": 16}},
            {"name": "arc_challenge", "mix": 0.5, "latency_budget_s": 2.0, "answer_options": 4,
             "prompt_tokens": {"dist": "fixed", "mean": 64}, "output_tokens": {"dist": "fixed", "mean": 8}}],
        "energy_budget_J": 100.0, "arrivals": {"process": "poisson", "rate_per_s": rate},
        "policy": {"name": "gate", "k": 2},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=80)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-live-")))
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    servers, urls = [], []
    try:
        for _ in range(2):
            proc = subprocess.Popen([*HW, "serve", "--backend", "hf:tiny-llama", "--meter", "none", "--port", "0",
                                     "--threads", "1"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
            servers.append(proc)
            urls.append("http://127.0.0.1:" + re.search(r":(\d+) ", proc.stdout.readline()).group(1))
        run(*HW, "collect", "--backend", f"openai:{urls[0]}", "--meter", "none", "--device-name", "this CPU",
            "--shapes", "32x8,64x8,32x16,64x16,32x24,64x24", "--reps", "5", "--out", str(work / "trace.csv"))
        print(run(*HW, "fit", str(work / "trace.csv"), "--name", "cpu-tiny-llama-served", "--device-name",
                  "this CPU", "--assume-power", "30", "--out", str(work / "cpu-tiny.yaml")).strip())
        (work / "live.yaml").write_text(yaml.safe_dump(scenario(work / "cpu-tiny.yaml", args.queries, args.rate)))
        print(run(*HW, "live", str(work / "live.yaml"), "--endpoint", f"a={urls[0]}", "--endpoint", f"b={urls[1]}",
                  "--out", str(work / "live")).strip())
    finally:
        for proc in servers:
            proc.terminate()
    run("moe2sim", "run", str(work / "live.yaml"), "--out", str(work / "sim"), "--quiet")
    print(run(*HW, "compare", str(work / "sim"), str(work / "live"), "--out", str(work / "compare")))
    print(f"(work folder: {work})")


if __name__ == "__main__":
    main()
