"""Side-by-side simulator speed, interleaved rounds (A, B, C, D, A, B, ...), median of per-round ratios.

Contestants, each in a fresh process per round:
- moe2sim (this checkout): scenarios/paper.yaml (7 experts, k = 2), a simulated day at 1 query/s,
  routing, service draws and records included;
- moe2sim at another checkout (`--before PATH`, e.g. a `git worktree` of an older commit), same workload;
- vllm-sr-sim (`--srsim-python`, a venv with `pip install vllm-sr-sim simpy`): ../shared/bench/srsim_bench.py;
- bare SimPy fan-out: ../shared/bench/bare_simpy.py.

    python benchmarks/bench_peers.py [--rounds 5] [--before /path/to/old/checkout] [--srsim-python /tmp/srsim/bin/python]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "bench"
MOE2SIM = """
import json, sys, time
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin
twin = Twin.build(load_scenario(sys.argv[1], ["duration_s=86400", "arrivals.rate_per_s=1.0", "policy.k=2"]))
t0 = time.perf_counter(); _, q, _ = twin.simulate(); dt = time.perf_counter() - t0
print(json.dumps({"queries": len(q), "seconds": dt, "per_s": len(q) / dt}))
"""


def moe2sim(root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", MOE2SIM, str(root / "scenarios" / "paper.yaml")], env=env, cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["per_s"]


def srsim(python: str) -> float:
    out = subprocess.run([python, str(BENCH / "srsim_bench.py"), "--n", "200000"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["req_per_s_sim"]


def bare() -> float:
    out = subprocess.run([sys.executable, str(BENCH / "bare_simpy.py"), "86400"], capture_output=True, text=True,
                         check=True).stdout  # "N queries in T s = X q/s; ..."
    return float(out.split("=")[1].split("q/s")[0].replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path)
    parser.add_argument("--srsim-python", default="/tmp/srsim/bin/python")
    args = parser.parse_args()
    runs: dict[str, list[float]] = {}
    contestants = {"moe2sim": lambda: moe2sim(ROOT)}
    if args.before:
        contestants["moe2sim (before)"] = lambda: moe2sim(args.before)
    if Path(args.srsim_python).exists():
        contestants["vllm-sr-sim"] = lambda: srsim(args.srsim_python)
    contestants["bare SimPy"] = bare
    for r in range(args.rounds):
        for name, run in contestants.items():
            runs.setdefault(name, []).append(run())
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f}/s" for n, v in runs.items()), file=sys.stderr)
    print("| simulator | per-round throughput (queries or requests / s) | median |")
    print("|---|---|---|")
    for name, values in runs.items():
        print(f"| {name} | {', '.join(f'{v:,.0f}' for v in values)} | {statistics.median(values):,.0f} |")
    print("\n| ratio (median of per-round ratios) | value |\n|---|---|")
    for other in [n for n in runs if n != "moe2sim"]:
        ratios = [a / b for a, b in zip(runs["moe2sim"], runs[other])]
        print(f"| moe2sim / {other} | {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}–{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
