"""Fault injection on loopback: `hardware live` against endpoints that refuse, hang (beyond the read
timeout), answer something that is not HTTP, cut the stream before its [DONE], are killed, killed
and restarted, or never restarted; Ctrl-C (once and twice) and SIGKILL of the live runner, and
`--resume` after them. Real servers only: the tiny Llama
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


def answer_after(delay_s: float):
    """A handler that answers as an OpenAI-compatible server streams (three tokens, then [DONE]) after
    `delay_s`: a slow but healthy endpoint whose connections (one per leg sent) the RawServer counts."""
    event = 'data: {"choices": [{"text": "<7>", "index": 0, "finish_reason": null}]}\n\n'
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
              + (event * 3 + "data: [DONE]\n\n").encode())

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        if not stop.wait(delay_s):
            conn.sendall(answer)
    return handler


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


def journal_entries(folder: Path) -> list[tuple[str, dict]]:
    return journal.read(folder / JOURNAL)[1]


def live_cmd(scenario: Path, out: Path, a: str, b: str, *flags: str) -> list[str]:
    return [*HW, "live", str(scenario), "--endpoint", f"a={a}", "--endpoint", f"b={b}", "--out", str(out), *flags]


def wait_for(condition, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not condition():
        time.sleep(0.05)
    assert condition()


def read_records(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (pd.read_parquet(out / "queries.parquet"), pd.read_parquet(out / "legs.parquet"),
            pd.read_csv(out / "attempts.csv"))


def test_sigkill_leaves_every_sent_query_in_the_journal_and_resume_completes_it(tmp_path):
    """SIGKILL of `hardware live` mid-run: every leg an endpoint received was journaled before it was sent
    (0 sent queries without a row), those in flight are visible as sent and unanswered; a plain re-run into
    the folder is refused and the journal kept; `--resume` sends only the queries not answered, and the
    results hold every query once, answered, in the schema of a fresh run."""
    a, b = RawServer(answer_after(1.0)), RawServer(answer_after(1.0))
    scenario, out = scenario_file(tmp_path, 12, 4.0), tmp_path / "out"
    try:
        live = subprocess.Popen(live_cmd(scenario, out, a.url, b.url), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        wait_for(lambda: len(journaled_queries(out)) >= 2)
        live.kill()
        live.wait(10)
        entries = journal_entries(out)
        sends = [r for kind, r in entries if kind == "send"]
        answered = {r["query_id"] for kind, r in entries if kind == "query"}
        for server, name in ((a, "a"), (b, "b")):
            assert 0 < server.connections <= sum(r["expert"] == name for r in sends)  # journaled, then sent
        assert {r["query_id"] for r in sends} - answered  # in flight at the kill: visible as incomplete
        before = (out / JOURNAL).read_bytes()
        again = subprocess.run(live_cmd(scenario, out, a.url, b.url), capture_output=True, text=True, cwd=ROOT)
        assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "--resume" in again.stderr
        assert (out / JOURNAL).read_bytes() == before  # an earlier journal is never deleted nor rewritten
        sent_before = a.connections, b.connections
        resumed = subprocess.run(live_cmd(scenario, out, a.url, b.url, "--resume"), capture_output=True, text=True,
                                 cwd=ROOT, timeout=180)
        assert resumed.returncode == 0, resumed.stderr
        # only the queries not answered were sent again (each of them to both experts, k = 2)
        assert (a.connections - sent_before[0], b.connections - sent_before[1]) == (12 - len(answered),) * 2
        fresh = subprocess.run(live_cmd(scenario, tmp_path / "fresh", a.url, b.url), capture_output=True,
                               text=True, cwd=ROOT, timeout=180)
        assert fresh.returncode == 0, fresh.stderr
    finally:
        a.close()
        b.close()
    queries, legs, attempts = read_records(out)
    assert queries["query_id"].tolist() == list(range(12)) and (queries["error"] == "").all()
    assert sorted(legs["query_id"]) == sorted(list(range(12)) * 2) and len(attempts) == 24
    assert not (out / JOURNAL).exists()  # complete: every record is in the results
    journal_rows = {r["query_id"]: r["finish_s"] for kind, r in entries if kind == "query"}
    assert queries.set_index("query_id").loc[sorted(journal_rows), "finish_s"].tolist() == [
        journal_rows[q] for q in sorted(journal_rows)]  # answered queries kept as they were, not re-sent
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["queries_sent"] == summary["queries_succeeded"] == 12
    for resumed_table, fresh_table in zip((queries, legs, attempts), read_records(tmp_path / "fresh")):
        assert resumed_table.dtypes.to_dict() == fresh_table.dtypes.to_dict()
    assert (queries["latency_s"] > 0.9).all()  # each query's own latency (the endpoints answer after 1 s)


def test_ctrl_c_with_a_hanging_endpoint_exits_at_once_and_keeps_answered_legs(tmp_path):
    """SIGINT while expert a's endpoint hangs (read timeout 600 s): the run exits 130 without waiting for
    it; b's legs that had answered stay successes, a's are failed "interrupted"; the journal is kept (its
    queries incomplete) for --resume."""
    a, b = RawServer(hang), RawServer(answer_after(0.1))
    out = tmp_path / "out"
    live = subprocess.Popen(live_cmd(scenario_file(tmp_path, 40, 4.0), out, a.url, b.url, "--read-timeout", "600",
                                     "--retry-horizon-s", "600"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for(lambda: len({r["query_id"] for k, r in journal_entries(out) if k == "send"}) >= 3)
        time.sleep(0.5)  # b answers within 0.1 s
        live.send_signal(signal.SIGINT)
        stdout, stderr = live.communicate(timeout=60)  # far within the 600 s read timeout
    finally:
        live.kill()
        a.close()
        b.close()
    assert live.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1 and "--resume" in stderr
    queries, legs, _ = read_records(out)
    legs_a, legs_b = legs[legs["expert"] == "a"], legs[legs["expert"] == "b"]
    assert legs_a["error"].str.contains("interrupted").all()
    assert (legs_b["error"] == "").sum() >= 2 and (legs_b.loc[legs_b["error"] == "", "ttft_s"] > 0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_legs"]["per_expert"] == {"a": len(legs_a), "b": int((legs_b["error"] != "").sum())}
    assert summary["queries_sent"] == len(queries) >= 3 and (out / JOURNAL).exists()
    assert not journaled_queries(out)  # none answered: all stay incomplete in the journal, for --resume


def test_a_second_ctrl_c_exits_at_once_and_resume_completes_the_run(tmp_path):
    """Two SIGINTs: the second exits 130 at once, before the results are written (summary.json still says
    running); the journal holds every query sent; `--resume` against a healthy endpoint then ends with every
    query answered once."""
    a, b = RawServer(hang), RawServer(answer_after(0.1))
    scenario, out = scenario_file(tmp_path, 10, 4.0), tmp_path / "out"
    live = subprocess.Popen(live_cmd(scenario, out, a.url, b.url, "--read-timeout", "600"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for(lambda: any(k == "send" for k, _ in journal_entries(out)))
        live.send_signal(signal.SIGINT)
        time.sleep(0.3)
        live.send_signal(signal.SIGINT)
        stdout, stderr = live.communicate(timeout=60)
        assert live.returncode == 130, (stdout, stderr)
        assert "stopped at once" in stderr and "Traceback" not in stderr
        assert json.loads((out / "summary.json").read_text())["status"] == "running"
        assert not (out / "queries.parquet").exists()
        sent = {r["query_id"] for k, r in journal_entries(out) if k == "send"}
        assert sent and a.connections <= len(sent)
        healthy = RawServer(answer_after(0.1))
        try:
            resumed = subprocess.run(live_cmd(scenario, out, healthy.url, b.url, "--resume"), capture_output=True,
                                     text=True, cwd=ROOT, timeout=180)
        finally:
            healthy.close()
    finally:
        live.kill()
        a.close()
        b.close()
    assert resumed.returncode == 0, resumed.stderr
    queries, legs, _ = read_records(out)
    assert queries["query_id"].tolist() == list(range(10)) and (queries["error"] == "").all() and len(legs) == 20
    assert json.loads((out / "summary.json").read_text())["queries_sent"] == 10


def test_resume_sends_failed_queries_again_and_keeps_answered_ones(tmp_path):
    """A run whose expert a was unreachable (every query failed) resumed against a healthy a: each failed
    query is sent again, whole, and the results hold each query once, answered."""
    b = RawServer(answer_after(0.05))
    twin = Twin.build(load_scenario(scenario_file(tmp_path, 5, 20.0)))
    try:
        first = LiveRun(twin, {"a": f"http://127.0.0.1:{free_port()}", "b": b.url}, connect_timeout_s=0.4,
                        retry_horizon_s=0.3, journal=tmp_path)
        queries, _ = first.run()
        assert (queries["error"] != "").all() and b.connections == 5
        a = RawServer(answer_after(0.05))
        try:
            queries, legs = LiveRun(twin, {"a": a.url, "b": b.url}, journal=tmp_path, resume=True).run()
        finally:
            a.close()
    finally:
        b.close()
    assert a.connections == 5 and b.connections == 10  # each failed query sent again, to both experts
    assert queries["query_id"].tolist() == list(range(5)) and (queries["error"] == "").all() and len(legs) == 10


def test_resume_refuses_another_run_and_a_folder_without_a_journal(tmp_path):
    """--resume with another seed than the journal's, or into a folder with no journal: one line, exit 2,
    the journal untouched."""
    scenario, out = scenario_file(tmp_path, 4, 4.0), tmp_path / "out"
    url = f"http://127.0.0.1:{free_port()}"
    missing = subprocess.run(live_cmd(scenario, out, url, url, "--resume"), capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "no live journal" in missing.stderr and not out.exists()
    out.mkdir()
    with journal.Journal(out / JOURNAL, "moe2sim live", "another run") as kept:
        kept.append("send", [{"query_id": 0, "rank": 0, "expert": "a", "sent_s": 0.0}])
    (out / ".moe2sim-manifest.json").write_text(json.dumps({"writer": "moe2sim", "files": [JOURNAL]}))
    before = (out / JOURNAL).read_bytes()
    other = subprocess.run(live_cmd(scenario, out, url, url, "--resume", "--seed", "9"), capture_output=True,
                           text=True, cwd=ROOT)
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1 and "another run" in other.stderr
    assert (out / JOURNAL).read_bytes() == before
