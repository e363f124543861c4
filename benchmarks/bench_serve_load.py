"""Load on `hardware serve` over loopback: concurrent clients (httpx, asyncio) and a burst of
oversized or malformed requests against a small real model (the tiny-Llama shape on the CPU by
default, a few tokens a request). It stops by itself: each client sends a fixed number of
requests, and the whole run has a deadline.

Counted: every request's outcome (an HTTP status, or the exception that replaced it), connection
resets (a connection refused, reset or broken before an answer), lost requests (no answer at all:
an exception or still pending at the deadline), and from the answers the server's queue wait
(x_moe2sim.queue_s), the client's latency (p50/p99/max) and what the 429s' Retry-After said (median,
max: of the order of the answered requests' latency, not more). A sound server has 0 resets, 0 lost, and
answers every request with 200 or a clear 4xx (400/413/422 for the oversized ones, 429 with
Retry-After when an expert's queue is full).

    python benchmarks/bench_serve_load.py [--clients 200] [--requests 5] [--oversized 50] [--slots 2]
        [--queue 64] [--max-tokens 4] [--model tiny-llama] [--deadline-s 300]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESETS = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def start_server(model: str, slots: int, queue: int, threads: int = 1) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "moe2sim.hardware", "serve", "--backend", f"hf:{model}", "--meter", "none",
                             "--port", "0", "--slots", str(slots), "--queue", str(queue), "--threads", str(threads)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    match = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise RuntimeError("the server did not start")
    return proc, f"http://127.0.0.1:{match.group(1)}"


def oversized_requests(n: int) -> list[tuple[str, dict]]:
    """What a careless or hostile client sends: 5 MB bodies, max_tokens of 10^9, a million prompt
    tokens, JSON that is not an object."""
    kinds = [("/v1/completions", {"content": json.dumps({"prompt": "x" * (5 << 20), "max_tokens": 4}).encode()}),
             ("/v1/completions", {"json": {"prompt": "x", "max_tokens": 10 ** 9}}),
             ("/v1/completions", {"json": {"prompt": "x", "max_tokens": 4, "x_prompt_tokens": 10 ** 6}}),
             ("/v1/chat/completions", {"content": b"[1, 2, 3]"}),
             ("/v1/completions", {"content": b"null"})]
    return [kinds[i % len(kinds)] for i in range(n)]


async def load(url: str, clients: int = 200, requests: int = 1, oversized: int = 30, max_tokens: int = 4,
               deadline_s: float = 120.0) -> dict:
    outcomes: collections.Counter[str] = collections.Counter()
    queue_s: list[float] = []
    latency_s: list[float] = []
    retry_after_s: list[float] = []  # what the 429s said, against the 200s' latency: is it of the right size?
    errors: list[str] = []
    start_gate = asyncio.Event()

    async def one(client: httpx.AsyncClient, path: str, kwargs: dict, stream: bool) -> None:
        t0 = time.perf_counter()
        try:
            if stream:
                async with client.stream("POST", url + path, **kwargs) as r:
                    last, finished = None, False
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            finished = True
                        elif line.startswith("data:"):
                            last = line
                    status = r.status_code
                    if status == 200:
                        if not finished:
                            outcomes["200 without [DONE]"] += 1
                            return
                        queue_s.append(json.loads(last[5:])["x_moe2sim"]["queue_s"])
            else:
                r = await client.post(url + path, **kwargs)
                status = r.status_code
                body = r.json()  # every answer is JSON, errors included
                if status == 200:
                    queue_s.append(body["x_moe2sim"]["queue_s"])
                elif status == 429 and "retry-after" not in r.headers:
                    outcomes["429 without Retry-After"] += 1
                    return
                elif status == 429:
                    retry_after_s.append(float(r.headers["retry-after"]))
                elif "error" not in body:
                    outcomes[f"{status} without an error object"] += 1
                    return
            outcomes[str(status)] += 1
            if status == 200:
                latency_s.append(time.perf_counter() - t0)
        except RESETS as exc:
            outcomes["reset"] += 1
            errors.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001  timeouts and anything else: a lost request
            outcomes[f"lost ({type(exc).__name__})"] += 1
            errors.append(f"{type(exc).__name__}: {exc}")

    async def user(client: httpx.AsyncClient, i: int) -> None:
        await start_gate.wait()
        for j in range(requests):
            body = {"prompt": f"user {i} request {j}", "max_tokens": max_tokens, "x_prompt_tokens": 16}
            if (i + j) % 3 == 2:
                path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": body["prompt"]}],
                                                      "max_tokens": max_tokens}
            else:
                path = "/v1/completions"
            await one(client, path, {"json": {**body, "stream": (i + j) % 2 == 1}}, (i + j) % 2 == 1)

    async def burst(client: httpx.AsyncClient, path: str, kwargs: dict) -> None:
        await start_gate.wait()
        await one(client, path, kwargs, False)

    limits = httpx.Limits(max_connections=clients + oversized + 16, max_keepalive_connections=clients + oversized)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(deadline_s, connect=30.0)) as client:
        tasks = [asyncio.create_task(user(client, i)) for i in range(clients)]
        tasks += [asyncio.create_task(burst(client, p, kw)) for p, kw in oversized_requests(oversized)]
        t0 = time.perf_counter()
        start_gate.set()
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        wall = time.perf_counter() - t0
    sent = clients * requests + oversized
    answered = sum(v for k, v in outcomes.items() if k[:3].isdigit())
    q = np.array(queue_s) if queue_s else np.array([np.nan])
    lat = np.array(latency_s) if latency_s else np.array([np.nan])
    return {"clients": clients, "requests": sent, "answered": answered, "wall_s": wall,
            "resets": outcomes["reset"], "lost": sent - answered - outcomes["reset"],
            "unfinished_at_deadline": len(pending), "outcomes": dict(sorted(outcomes.items())),
            "queue_s_p50": float(np.percentile(q, 50)), "queue_s_p99": float(np.percentile(q, 99)),
            "latency_s_p50": float(np.percentile(lat, 50)), "latency_s_p99": float(np.percentile(lat, 99)),
            "latency_s_max": float(lat.max()), "retry_after_s_median": float(np.median(retry_after_s or [np.nan])),
            "retry_after_s_max": float(max(retry_after_s or [np.nan])), "errors": errors[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5, help="requests per client, one after the other")
    parser.add_argument("--oversized", type=int, default=50)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--deadline-s", type=float, default=300.0)
    args = parser.parse_args()
    proc, url = start_server(args.model, args.slots, args.queue)
    try:
        result = asyncio.run(load(url, args.clients, args.requests, args.oversized, args.max_tokens, args.deadline_s))
        health = httpx.get(f"{url}/health").json()
    finally:
        proc.terminate()
        proc.wait(30)
    print(json.dumps({**result, "server": health["experts"]}, indent=1))
    print(f"server exit code {proc.returncode}")


if __name__ == "__main__":
    main()
