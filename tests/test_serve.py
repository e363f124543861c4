"""`hardware serve` on its ASGI stack, against a real tiny Llama on loopback: malformed and oversized
requests get a JSON 4xx (never a traceback or a silent hang), a full queue answers 429 with
Retry-After, a client that goes away frees its slot, every route answers, flags are validated and
signals stop the server cleanly."""
from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from moe2sim.hardware.backends import HFBackend, OpenAIBackend
from moe2sim.hardware.serve import Limits, serve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    """One slot, a queue of one: easy to fill."""
    backend = HFBackend("tiny-llama")
    limits = Limits.for_models({"default": backend}, queue=1)
    srv = serve(backend, None, "127.0.0.1", 0, slots=1, limits=limits)
    yield srv
    srv.shutdown()


@pytest.fixture
def slow_server():
    """One slot, a queue of one, on SmolLM2-135M's shape: tens of ms a token on a CPU, so a request of
    1,500 tokens still runs while others queue and leave (tiny-llama can finish it in under a second)."""
    backend = HFBackend("smollm2-135m")
    srv = serve(backend, None, "127.0.0.1", 0, slots=1, limits=Limits.for_models({"default": backend}, queue=1))
    yield srv
    srv.shutdown()


def wait_idle(url: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        state = next(iter(httpx.get(f"{url}/health").json()["experts"].values()))
        if state["running"] == 0 and state["waiting"] == 0 or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


@pytest.mark.parametrize("body,code,says", [
    (b"[]", 422, "not a list"), (b"null", 422, "not null"), (b'"x"', 422, "not a string"),  # crashed before
    (b"{oops", 400, "not JSON"), (b'{"prompt": 3}', 422, "prompt"), (b'{"max_tokens": 0}', 422, "max_tokens"),
    (b'{"prompt": "x", "max_tokens": 1000000000}', 400, "--max-tokens"), (b'{"prompt": "x", "x_prompt_tokens": 100000}', 400,
                                                          "--max-prompt-tokens"),
    (b'{"prompt": "x", "x_prompt_tokens": 2000, "max_tokens": 100}', 400, "context"),
    (b'{"prompt": "x", "stream": "maybe"}', 422, "stream"), (b'{"messages": []}', 422, "prompt"),
])
def test_bad_requests_get_a_json_4xx(server, body, code, says):
    r = httpx.post(f"{server.url}/v1/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == code, r.text
    assert says in r.json()["error"]["message"]


def test_oversized_and_broken_http_requests(server):
    r = httpx.post(f"{server.url}/v1/completions", content=b"x" * (5 << 20))
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:  # Content-Length: -1
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{server.url}/v1/completions").status_code == 405
    assert httpx.post(f"{server.url}/v1/nothing", json={}).json()["error"]["code"] == 404
    assert OpenAIBackend(server.url).generate("still fine", 8, 3).output_tokens == 3


def test_routes_stream_and_end_with_done(server):
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["data"][0]["id"] == "tiny-llama" and models["data"][0]["max_model_len"] == 2048
    for path, body in (("/v1/completions", {"prompt": "hi", "max_tokens": 3}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})):
        plain = httpx.post(f"{server.url}{path}", json=body).json()
        assert plain["usage"]["completion_tokens"] == 3 and plain["x_moe2sim"]["energy_J"] is None
        assert plain["x_moe2sim"]["energy_reason"] and plain["x_moe2sim"]["queue_s"] >= 0
        with httpx.stream("POST", f"{server.url}{path}", json={**body, "stream": True}) as r:
            lines = [x for x in r.iter_lines() if x]
        assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][5:])["x_moe2sim"]["output_tokens"] == 3


def test_a_full_queue_is_429_and_a_gone_client_frees_its_slot(slow_server):
    """A long streamed request holds the only slot, a second waits in the queue of one, a third is
    429 with Retry-After. Both leave: their generation stops, the slot is free for the next."""
    url = slow_server.url
    long = {"prompt": "x", "max_tokens": 1500, "stream": True}

    def impatient() -> None:  # non-streaming, queued behind the long one, gives up after 1.5 s
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", json={"prompt": "y", "max_tokens": 1500}, timeout=1.5)

    with httpx.Client(timeout=10) as c1:
        with c1.stream("POST", f"{url}/v1/completions", json=long) as r1:
            lines = r1.iter_lines()  # kept: dropping the iterator would close the connection
            next(lines)  # it is generating
            waiter = threading.Thread(target=impatient)
            waiter.start()
            deadline = time.monotonic() + 5
            while httpx.get(f"{url}/health").json()["experts"]["smollm2-135m"]["waiting"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            r3 = httpx.post(f"{url}/v1/completions", json={"prompt": "z", "max_tokens": 2})
            assert r3.status_code == 429 and int(r3.headers["Retry-After"]) >= 1
            assert "--queue" in r3.json()["error"]["message"]
            waiter.join()
        # r1 closed mid-stream, the impatient one gone while queued
    start = time.monotonic()
    state = wait_idle(url)
    assert state["running"] == 0 and state["waiting"] == 0 and state["cancelled"] >= 2, state
    assert time.monotonic() - start < 5  # 1,500 tokens would take far longer: generation stopped
    assert OpenAIBackend(url).generate("next", 8, 3).output_tokens == 3


def test_flags_are_checked_and_signals_stop_cleanly(tmp_path):
    hw = [sys.executable, "-m", "moe2sim.hardware", "serve", "--backend", "hf:tiny-llama", "--meter", "none"]
    for flag, value in (("--port", "99999"), ("--port", "x"), ("--slots", "0"), ("--queue", "-1"),
                        ("--max-tokens", "0")):
        proc = subprocess.run([*hw, flag, value], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2 and flag in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([*hw, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)
        port = re.search(r":(\d+) ", proc.stdout.readline()).group(1)
        if sig == signal.SIGINT:  # the port is taken now: a second server says so, exit 2
            taken = subprocess.run([*hw, "--port", port], capture_output=True, text=True, cwd=ROOT)
            assert taken.returncode == 2 and "--port" in taken.stderr and "Traceback" not in taken.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 0 and stderr == "", stderr
        assert stdout.strip().splitlines() == [f"stopped on {sig.name}: 0 requests served"]


def hold_the_slot(url: str, client: httpx.Client):
    """A long stream that holds the only slot of `slow_server` while the test fills its queue."""
    response = client.send(client.build_request("POST", f"{url}/v1/completions",
                                                json={"prompt": "x", "max_tokens": 1500, "stream": True}), stream=True)
    lines = response.iter_lines()
    next(lines)  # it is generating
    return response, lines


def test_counters_count_queued_streams_whose_clients_all_leave_at_once():
    """40 streams queue behind a long one and their clients drop at once: every one is counted, as
    cancelled, and the counts add up (received = invalid + rejected + admitted; admitted = served + failed
    + cancelled once idle)."""
    backend = HFBackend("smollm2-135m")
    srv = serve(backend, None, "127.0.0.1", 0, slots=1, limits=Limits.for_models({"m": backend}, queue=64))
    url, dropped = srv.url, 40
    try:
        httpx.post(f"{url}/v1/completions", content=b"{oops")  # one invalid request, counted too

        async def queue_and_drop() -> None:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=dropped + 1)) as client:
                body = {"prompt": "q", "max_tokens": 5, "stream": True}
                streams = [await client.send(client.build_request("POST", f"{url}/v1/completions", json=body),
                                             stream=True) for _ in range(dropped)]
                assert all(r.status_code == 200 for r in streams)
                await asyncio.gather(*(r.aclose() for r in streams))  # every client leaves at once

        with httpx.Client(timeout=30) as holder:
            response, _ = hold_the_slot(url, holder)
            deadline = time.monotonic() + 10
            asyncio.run(queue_and_drop())
            while httpx.get(f"{url}/health").json()["experts"]["smollm2-135m"]["cancelled"] < dropped:
                assert time.monotonic() < deadline, httpx.get(f"{url}/health").json()
                time.sleep(0.05)
            response.close()
        state = wait_idle(url)
        health = httpx.get(f"{url}/health").json()
        assert state["cancelled"] == dropped + 1 and state["admitted"] == dropped + 1, state  # the holder left too
        assert state["served"] == state["failed"] == state["rejected"] == 0 and state["waiting"] == state["running"] == 0
        requests = health["requests"]
        assert requests["received"] == dropped + 2 and requests["invalid"] == 1
        assert requests["received"] == requests["invalid"] + state["rejected"] + state["admitted"]
    finally:
        srv.shutdown()


def test_retry_after_comes_from_the_measured_service_time(slow_server):
    """A fresh server's 429 says to come back once its queue has drained at the model's speed measured at
    start (it said 1 s a request before: 64 s for 64 short requests that drain in a few seconds); each
    answered request then moves the estimate halfway to what it measured (the prior weighs as one answer)."""
    url = slow_server.url
    health = lambda: httpx.get(f"{url}/health").json()["experts"]["smollm2-135m"]  # noqa: E731
    prior = health()["service_estimate"]
    assert prior["source"].startswith("measured at start") and prior["observed"] == 0
    assert 0 < prior["first_token_s"] and 0 < prior["per_token_s"]
    answers: list[dict] = []
    with httpx.Client(timeout=120) as holder:
        response, _ = hold_the_slot(url, holder)
        waiter = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{url}/v1/completions", json={"prompt": "y", "max_tokens": 3}, timeout=120).json()))
        waiter.start()  # the queue of one: full once it waits
        deadline = time.monotonic() + 30
        while health()["waiting"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = httpx.post(f"{url}/v1/completions", json={"prompt": "z", "max_tokens": 2})
        response.close()  # the slot frees: the waiting request runs
        waiter.join()
    assert refused.status_code == 429  # one request of 3 tokens waits: S(3) = first + 2 x per token
    assert int(refused.headers["Retry-After"]) == max(1, math.ceil(prior["first_token_s"] + 2 * prior["per_token_s"]))
    served = answers[0]["x_moe2sim"]
    after = wait_idle(url)["service_estimate"]
    assert after["observed"] == 1
    assert after["first_token_s"] == pytest.approx((prior["first_token_s"] + served["ttft_s"]) / 2)
    assert after["per_token_s"] == pytest.approx((prior["per_token_s"] + served["decode_s"] / 2) / 2)
