"""Live vs simulated, end to end through the commands a user runs (on this machine's CPU by default):

    2 x hardware serve (SmolLM2-135M shape, CPU, loopback) -> hardware collect through the first endpoint
    -> hardware fit -> hardware live (scenario policy, real time) -> moe2sim run (same scenario)
    -> hardware compare

The profile is collected through a served endpoint (client-side timing), so it includes what
serving adds (HTTP, streaming); on a CPU each server has one thread (two servers on a 2-core
machine). Without a meter energy is not compared (NaN, never 0) and the profile's powers are
assumed; with one (`--meter nvml` on a GPU) the profile is fitted on measured energy and the table
gives energy errors too. On a GPU both experts are served by one `hardware serve` process, which
splits the device's energy between the legs running at once; the two experts then also contend for
the one GPU, which the twin (one device per expert) does not model — on one thread,
`--model tiny-llama --one-server` shows that contention as a −60 % latency error. A second table splits the service-time
error: per shape, the collected (one request at a time) service time against the live one, seen by
the client and by the server.

    python benchmarks/bench_live.py [--model smollm2-135m] [--queries 40] [--rate 0.5] [--work DIR]
    python benchmarks/bench_live.py --device cuda:0 --meter nvml --model mistral-7b --rate 1 --queries 120

The default model takes about 1 s a request on one thread, so serving overheads are small next to
compute, as on a real edge server; `--model tiny-llama --queries 80 --rate 1` runs ~40 ms requests,
where the HTTP and Python overheads dominate.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
HW = [sys.executable, "-m", "moe2sim.hardware"]


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


def service_by_shape(trace: Path, live: Path) -> pd.DataFrame:
    """Mean service time (ttft + decode) per (prompt, output) shape: collected alone vs in the live run."""
    collected = pd.read_csv(trace).query("warm").assign(service=lambda d: d["ttft_s"] + d["decode_s"])
    queries = pd.read_parquet(live / "queries.parquet")[["query_id", "prompt_tokens", "output_tokens"]]
    legs = pd.read_parquet(live / "legs.parquet").merge(queries, on="query_id")
    legs = legs.assign(client=legs["ttft_s"] + legs["decode_s"], server=legs["server_ttft_s"] + legs["server_decode_s"])
    shape = ["prompt_tokens", "output_tokens"]
    table = legs.groupby(shape).agg(legs=("client", "size"), live_client_ms=("client", "mean"),
                                    live_server_ms=("server", "mean"))
    table.insert(1, "collected_ms", collected.groupby(shape)["service"].mean().reindex(table.index))
    table[["collected_ms", "live_client_ms", "live_server_ms"]] *= 1e3
    table["live_vs_collected_pct"] = 100 * (table["live_client_ms"] / table["collected_ms"] - 1)
    return table.round(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m", help="a shape of hardware.backends.SHAPES")
    parser.add_argument("--device", default="cpu", help="torch device of both servers (cpu, cuda:0)")
    parser.add_argument("--meter", default="none", help="energy meter of the servers and the collection")
    parser.add_argument("--one-server", action=argparse.BooleanOptionalAction, default=None,
                        help="serve both experts from one process (default: on a GPU, not on a CPU)")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-live-")))
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    servers, urls = [], []
    try:
        # CPU: a process per expert, one thread each. GPU: one server holds both experts, so they split
        # the device's energy instead of each metering all of it.
        cpu = args.device == "cpu"
        one = not cpu if args.one_server is None else args.one_server
        for backends in ([[f"a=hf:{args.model}", f"b=hf:{args.model}"]] if one else [[f"hf:{args.model}"]] * 2):
            proc = subprocess.Popen([*HW, "serve", *(x for b in backends for x in ("--backend", b)),
                                     "--device", args.device, "--meter", args.meter, "--port", "0",
                                     *(["--threads", "1"] if cpu else [])],
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
            servers.append(proc)
            url = "http://127.0.0.1:" + re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline()).group(1)
            urls += [url, url] if one else [url]
        device_name = "this CPU" if cpu else args.device
        run(*HW, "collect", "--backend", f"openai:{urls[0]}#a", "--meter", args.meter, "--device-name", device_name,
            "--shapes", "32x8,64x8,32x16,64x16,32x24,64x24", "--reps", "5", "--out", str(work / "trace.csv"))
        assumed = ["--assume-power", "30"] if args.meter == "none" else []
        print(run(*HW, "fit", str(work / "trace.csv"), "--name", f"{args.device}-{args.model}-served",
                  "--device-name", device_name, *assumed, "--out", str(work / "profile.yaml")).strip())
        (work / "live.yaml").write_text(yaml.safe_dump(scenario(work / "profile.yaml", args.queries, args.rate)))
        print(run(*HW, "live", str(work / "live.yaml"), "--endpoint", f"a={urls[0]}", "--endpoint", f"b={urls[1]}",
                  "--out", str(work / "live")).strip())
    finally:
        for proc in servers:
            proc.terminate()
    run("moe2sim", "run", str(work / "live.yaml"), "--out", str(work / "sim"), "--quiet")
    print(run(*HW, "compare", str(work / "sim"), str(work / "live"), "--out", str(work / "compare")))
    print(service_by_shape(work / "trace.csv", work / "live").to_string())
    print(f"(work folder: {work})")


if __name__ == "__main__":
    main()
