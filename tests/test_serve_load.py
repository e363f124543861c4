"""The load test of benchmarks/bench_serve_load.py, shorter: 200 concurrent clients (one request
each, a few tokens) and a burst of 30 oversized or malformed requests against a real tiny Llama
served on loopback. Nothing is reset or lost; every answer is a 200 (streams ending with [DONE])
or a clear 4xx: 400/413/422 for the oversized, 429 with Retry-After when the queue is full."""
from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_serve_load", ROOT / "benchmarks" / "bench_serve_load.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_200_concurrent_clients_and_an_oversized_burst():
    proc, url = bench.start_server("tiny-llama", slots=2, queue=64)
    try:
        result = asyncio.run(bench.load(url, clients=200, requests=1, oversized=30, max_tokens=2, deadline_s=90))
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0  # SIGTERM: a clean stop
    assert result["resets"] == 0 and result["lost"] == 0 and result["unfinished_at_deadline"] == 0, result
    assert result["answered"] == 230
    assert set(result["outcomes"]) <= {"200", "400", "413", "422", "429"}, result["outcomes"]
    assert result["outcomes"]["400"] == 12 and result["outcomes"]["413"] == 6 and result["outcomes"]["422"] == 12
    assert result["outcomes"]["200"] >= 66  # 2 slots + a queue of 64 at least, the rest 429
    assert result["outcomes"]["200"] + result["outcomes"].get("429", 0) == 200
    assert 0 <= result["queue_s_p50"] <= result["queue_s_p99"] < 60
