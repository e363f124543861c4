"""Fault injection on loopback: `hardware live` against endpoints that refuse, hang (beyond the read
timeout), answer something that is not HTTP, cut the stream before its [DONE], are killed, killed
and restarted, or never restarted; and Ctrl-C of the live runner. Real servers only: the tiny Llama
behind `hardware serve` (in-process or a subprocess) and raw TCP sockets for the misbehaving ones.

In every case: no query sent is unrecorded, each failure is visible in the records (error,
attempts, the attempts table), in the summary (failed legs per expert and per category, statistics
over the queries that succeeded only) and in the exit code."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from moe2sim.hardware.backends import HFBackend
from moe2sim.data import journal
from moe2sim.hardware.live import JOURNAL, LiveRun
from moe2sim.report.live_summary import live_summary
from moe2sim.hardware.serve import serve
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin

ROOT = Path(__file__).resolve().parents[1]
HW = [sys.executable, "-m", "moe2sim.hardware"]


def scenario_file(tmp_path: Path, queries: int, rate: float, name: str = "faults.yaml") -> Path:
    raw = {
        "name": "live-faults", "seed": 3, "queries": queries, "data_dir": str(ROOT / "traces"),
        "experts": [{"name": "a", "model": "meta-llama/Meta-Llama-3-8B", "profile": "h200-llama-3.1-8b"},
                    {"name": "b", "model": "cognitivecomputations/dolphin-2.9-llama3-8b",
                     "profile": "h200-llama-3.1-8b"}],
        "categories": [{"name": "gsm8k", "mix": 0.5, "latency_budget_s": 5.0,
                        "prompt_tokens": {"dist": "fixed", "mean": 16}, "output_tokens": {"dist": "fixed", "mean": 6}},
                       {"name": "mmlu", "mix": 0.5, "latency_budget_s": 5.0,
                        "prompt_tokens": {"dist": "fixed", "mean": 24}, "output_tokens": {"dist": "fixed", "mean": 4}}],
        "energy_budget_J": 100.0, "arrivals": {"process": "poisson", "rate_per_s": rate},
        "policy": {"name": "gate", "k": 2}, "outputs": {"report": True},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


class RawServer:
    """A TCP listener on loopback whose connections `handler(conn)` serves, one thread each."""

    def __init__(self, handler):
        self.handler, self.stop = handler, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            conn.recv(65536)  # the request (headers and a small body)
            self.handler(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def garbage(conn: socket.socket, _: threading.Event) -> None:
    conn.sendall(b"\x00\xffSSH-2.0-not-http garbage\r\n\r\n\x13\x37")


def hang(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(30)  # accepts, reads the request, never answers


def cut_stream(conn: socket.socket, _: threading.Event) -> None:
    """A valid HTTP answer and two tokens, then the connection closes: no [DONE]."""
    event = 'data: {"choices": [{"text": "<7>", "index": 0, "finish_reason": null}]}\n\n'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                 + (event * 2).encode())


def http_500(conn: socket.socket, _: threading.Event) -> None:
    body = b'{"error": {"message": "injected overload"}}'
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 0\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


@pytest.fixture(scope="module")
def tiny_server():
    """A real tiny Llama behind `hardware serve`'s ASGI app, in this process (2 slots)."""
    server = serve(HFBackend("tiny-llama"), None, "127.0.0.1", 0, slots=2)
    yield server.url
    server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAULTS = {"refused": None, "garbage": garbage, "hang": hang, "cut_stream": cut_stream, "http_503": http_500}
EXPECTED = {"refused": "unreachable", "garbage": "broken HTTP response", "hang": "read-timeout",
            # a cut stream ends with a FIN ("without its [DONE] marker after 2 tokens") or, when the dying server
            # resets the connection, "connection failed after 2 tokens": either way the leg failed mid-stream
            "cut_stream": "after 2 tokens", "http_503": "HTTP 503"}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_endpoint_fails_its_legs_visibly(tmp_path, tiny_server, fault):
    """Expert a behind the fault, b a healthy server: every query recorded, a's legs failed with the
    fault named in the error after retries over the horizon, b's legs fine, the failed queries out of
    the statistics and counted per expert and category, exit code 3 (default threshold 0)."""
    raw = RawServer(FAULTS[fault]) if FAULTS[fault] else None
    url = raw.url if raw else f"http://127.0.0.1:{free_port()}"
    twin = Twin.build(load_scenario(scenario_file(tmp_path, 6, 20.0)))
    run = LiveRun(twin, {"a": url, "b": tiny_server}, read_timeout_s=0.4, connect_timeout_s=0.4,
                  retry_horizon_s=1.0, journal=tmp_path)
    try:
        queries, legs = run.run()
    finally:
        if raw:
            raw.close()
    assert run.sent == run.planned == len(queries) == 6 and len(legs) == 12
    a, b = legs[legs["expert"] == "a"], legs[legs["expert"] == "b"]
    assert a["error"].str.contains(EXPECTED[fault], regex=False).all(), a["error"].tolist()
    assert (a["attempts"] >= 2).all() and a["ttft_s"].isna().all()
    assert (b["error"] == "").all() and (b["ttft_s"] > 0).all()
    assert (queries["error"].str.startswith("a: ")).all()
    attempts = run.attempt_table()
    assert len(attempts) == int(legs["attempts"].sum())  # every attempt kept, with its time and error
    assert (attempts.loc[attempts["expert"] == "a", "error"] != "").all()
    # the journal holds every query already (what a crash would have kept)
    assert sorted(r["query_id"] for r in journaled_queries(tmp_path)) == list(range(6))
    summary = live_summary(twin, run, queries, legs, 0.0)
    assert summary["failed_queries"]["total"] == 6 and summary["queries_succeeded"] == 0
    assert summary["failed_legs"]["per_expert"] == {"a": 6, "b": 0}
    assert sum(summary["failed_legs"]["per_category"].values()) == 6
    assert summary["accuracy"] is None and summary["latency_s"] is None  # no give-up time in the statistics
    assert summary["exit_code"] == 3 and summary["energy_reason"]
    assert live_summary(twin, run, queries, legs, 0.5)["exit_code"] == 0  # half the legs: within 50 %
    json.dumps(summary, allow_nan=False)


def journaled_queries(folder) -> list[dict]:
    """The query records a live run has journaled so far."""
    return [r for kind, r in journal.read(folder / JOURNAL)[1] if kind == "query"]


def start_serve(port: int = 0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([*HW, "serve", "--backend", "hf:tiny-llama", "--meter", "none", "--port", str(port),
                             "--threads", "1"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, line
    return proc, int(match.group(1))


def test_killed_restarted_and_never_restarted_endpoints(tmp_path):
    """`hardware live` as a user runs it: a's server is killed mid-run and restarted on its port 1.5 s
    later, b's is killed and never comes back. a's legs ride out the outage on their retries (backoff
    over the horizon), b's legs fail from the kill on (those in flight mid-stream too); every query is
    recorded, the summary counts b's failed legs, the exit code says legs failed."""
    (pa, port_a), (pb, port_b) = start_serve(), start_serve()
    out = tmp_path / "out"
    live = subprocess.Popen([*HW, "live", str(scenario_file(tmp_path, 24, 4.0)), "--endpoint",
                             f"a=http://127.0.0.1:{port_a}", "--endpoint", f"b=http://127.0.0.1:{port_b}",
                             "--retry-horizon-s", "60", "--read-timeout", "10", "--connect-timeout", "1",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    restarted = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(journaled_queries(out)) < 3:
            time.sleep(0.1)
        pa.kill()
        pb.kill()
        pa.wait(5)
        pb.wait(5)
        time.sleep(1.5)
        restarted, _ = start_serve(port_a)
        stdout, stderr = live.communicate(timeout=180)
    finally:
        for p in (pa, pb, restarted, live):
            if p is not None and p.poll() is None:
                p.kill()
    assert live.returncode == 3, (stdout, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    queries, legs = pd.read_parquet(out / "queries.parquet"), pd.read_parquet(out / "legs.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert len(queries) == summary["queries_sent"] == summary["queries_planned"] == 24  # none unrecorded
    assert len(legs) == 48 and not list(out.glob("*.partial.jsonl"))
    a, b = legs[legs["expert"] == "a"], legs[legs["expert"] == "b"]
    assert (a["error"] == "").all(), a["error"].tolist()  # the restart came within the horizon
    assert a["attempts"].max() >= 2  # some rode out the outage
    assert (b["error"] != "").sum() >= 18 and b["ttft_s"][b["error"] != ""].isna().all()
    assert summary["failed_legs"]["per_expert"]["b"] == int((b["error"] != "").sum())
    assert summary["failed_legs"]["per_expert"]["a"] == 0
    assert summary["failed_queries"]["total"] == int((queries["error"] != "").sum())
    assert summary["queries"] == summary["queries_succeeded"] == int((queries["error"] == "").sum())
    assert summary["status"] == "complete" and summary["exit_code"] == 3
    attempts = pd.read_csv(out / "attempts.csv")
    assert len(attempts) == int(legs["attempts"].sum())
    assert "failed" in (out / "report.html").read_text()


def test_ctrl_c_keeps_what_was_done(tmp_path, tiny_server):
    """SIGINT to a running `hardware live`: exit 130 with one line, every query sent is in the records
    (those in flight as failed, 'interrupted'), summary.json says interrupted, and the files of an
    older run in the folder are gone rather than looking current."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "queries.csv").write_text("query_id\n0\n")  # an older run's results
    (out / "summary.json").write_text('{"status": "complete"}')
    (out / ".moe2sim-manifest.json").write_text('{"writer": "moe2sim", "files": ["queries.csv", "summary.json"]}')
    live = subprocess.Popen([*HW, "live", str(scenario_file(tmp_path, 60, 3.0)), "--endpoint", f"a={tiny_server}",
                             "--endpoint", f"b={tiny_server}", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(journaled_queries(out)) < 2:
        time.sleep(0.05)
    assert not (out / "queries.csv").exists()  # the older run is gone as soon as this one starts
    assert json.loads((out / "summary.json").read_text())["status"] == "running"
    live.send_signal(signal.SIGINT)
    stdout, stderr = live.communicate(timeout=30)
    assert live.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1 and "interrupted" in stderr
    summary = json.loads((out / "summary.json").read_text())
    queries = pd.read_parquet(out / "queries.parquet")
    assert summary["interrupted"] is True and summary["status"] == "interrupted" and summary["exit_code"] == 130
    assert 2 <= len(queries) == summary["queries_sent"] < summary["queries_planned"] == 60
    assert summary["failed_queries"]["total"] == int((queries["error"] != "").sum())
    assert queries["query_id"].tolist() == list(range(len(queries)))


def test_a_crash_leaves_the_journal_and_a_running_summary(tmp_path, tiny_server):
    """SIGKILL (no chance to clean up): the journal keeps the queries done, summary.json says the run
    never finished, and no older result looks current."""
    out = tmp_path / "out"
    live = subprocess.Popen([*HW, "live", str(scenario_file(tmp_path, 60, 4.0)), "--endpoint", f"a={tiny_server}",
                             "--endpoint", f"b={tiny_server}", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(journaled_queries(out)) < 2:
        time.sleep(0.05)
    live.kill()
    live.wait(10)
    assert json.loads((out / "summary.json").read_text())["status"] == "running"
    rows = journaled_queries(out)
    assert len(rows) >= 2 and {"query_id", "latency_s", "error"} <= set(rows[0])
    assert not (out / "queries.parquet").exists()
