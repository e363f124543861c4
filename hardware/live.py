"""`hardware live`: run a scenario's policy — the very object the simulator uses — against real
endpoints (one OpenAI-compatible URL per expert), with the scenario's arrival process in real
time (or compressed by `speed`: arrivals come `speed` times as fast, so the load is heavier),
writing per-query and per-leg records in the simulator's schema, times in wall-clock seconds from
the start.

Every query sent is recorded, whatever its endpoints do (refuse, hang, time out, answer something
that is not HTTP, die mid-stream): a leg that still fails after its retries is recorded with its
error, a stream without its `[DONE]` end marker is a failed leg, and a query with any failed leg is
a failed query (its `error` is set). Failed queries are kept out of the accuracy and latency
statistics and counted apart (summary: `failed_queries`, `failed_legs` per expert and category).

Retries: a retryable error (connection refused or lost, timeout, 5xx, 429, garbage, cut stream) is
retried with exponential backoff (0.25 s, doubling, at most 4 s, or the server's Retry-After) for
as long as the next attempt would start within `retry_horizon_s` of the leg's first attempt (and at
most `retries` retries if given). Every attempt's start, end and error is kept (`attempts` table);
a leg's timing covers all its attempts: start_s is its first attempt's start (after the server's
queue wait), time lost to failed attempts and backoff is inside ttft_s (the client waited for its
first token that long).

Leg timings are the client's, in the simulator's meaning: where the server reports how long the
request waited for a free slot (`hardware serve` does, as x_moe2sim.queue_s), that wait is queue_s
and is taken out of ttft_s, and start_s is when service began; an upstream server that does not
report it leaves queue_s NaN and its queueing inside ttft_s. server_ttft_s and server_decode_s are
the server's own timings (no network, no HTTP).

Records are appended to a journal (DIR/live.partial.jsonl, data/journal.py: records of kinds "query",
"leg" and "attempt") as queries complete, so a crash or Ctrl-C keeps what was done; after Ctrl-C the queries still in flight are recorded as failed ("interrupted").
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from moe2sim.hardware.backends import BackendError, Generation, OpenAIBackend
from moe2sim.data.journal import Journal, fingerprint
from moe2sim.policy import MixturePolicy
from moe2sim.routing.routers import Decision
from moe2sim.selection.budgets import budgets_of
from moe2sim.sim.records import Legs
from moe2sim.twin import Twin
from moe2sim.workload import QueryBatch

BACKOFF_S, BACKOFF_MAX_S = 0.25, 4.0
JOURNAL = "live.partial.jsonl"  # records of kinds "query", "leg", "attempt" (data/journal.py)
TITLE = "moe2sim live"


@dataclass
class Attempt:
    attempt: int
    start_s: float
    end_s: float
    error: str  # "" for the attempt that succeeded


@dataclass
class LegResult:
    gen: Generation | None
    start_s: float
    end_s: float
    attempts: int
    error: str
    log: list[Attempt] = field(default_factory=list)


def call_with_retries(backend: OpenAIBackend, prompt: str, prompt_tokens: int, max_tokens: int,
                      clock: Callable[[], float], retry_horizon_s: float = 30.0, retries: int | None = None,
                      stop: threading.Event | None = None) -> LegResult:
    """One leg: attempts with exponential backoff until one succeeds, an error is not retryable, the
    next attempt would start beyond `retry_horizon_s` after the first, `retries` retries are spent,
    or `stop` is set. Never raises: whatever goes wrong is the leg's error."""
    stop = stop or threading.Event()
    start = clock()
    log: list[Attempt] = []
    delay = BACKOFF_S

    def on_token(_: str) -> None:
        if stop.is_set():
            raise BackendError("interrupted (the run was stopped mid-stream)", retryable=False)

    while True:
        t0 = clock()
        retry_after = None
        try:
            gen = backend.generate(prompt, prompt_tokens, max_tokens, on_token=on_token)
            log.append(Attempt(len(log) + 1, t0, clock(), ""))
            return LegResult(gen, start, log[-1].end_s, len(log), "", log)
        except BackendError as exc:
            error, retryable, retry_after = str(exc), exc.retryable, exc.retry_after_s
        except Exception as exc:  # noqa: BLE001  a bug or an unforeseen failure: recorded, not lost
            error, retryable = f"unexpected {type(exc).__name__}: {exc}", False
        log.append(Attempt(len(log) + 1, t0, clock(), error))
        wait = max(delay, min(retry_after or 0.0, BACKOFF_MAX_S))
        if (not retryable or stop.is_set() or (retries is not None and len(log) > retries)
                or clock() + wait - start > retry_horizon_s):
            break
        if stop.wait(wait):
            break
        delay = min(delay * 2, BACKOFF_MAX_S)
    end = log[-1].end_s
    why = log[-1].error
    if stop.is_set() and "interrupted" not in why:
        why += " (then interrupted)"
    if len(log) > 1:
        why = f"{len(log)} attempts over {end - start:.2f} s failed; last: {why}"
    return LegResult(None, start, end, len(log), why, log)


def _finite(value: Any) -> float:
    return float(value) if value is not None and np.isfinite(value) else np.nan


def records_of(twin: Twin, policy: MixturePolicy, qid: int, batch: QueryBatch, decision: Decision, right: np.ndarray,
               results: list[LegResult], speed: float = 1.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The query's record and its legs' records, through the simulator's records builder
    (moe2sim.sim.records): the same columns, live's extras filled. `right` (1, k): the legs' outcomes
    drawn when the query was routed. A failed query is scored on its answered legs (wrong if none); the
    summary leaves it out of accuracy."""
    scenario = twin.scenario
    budgets = policy.budgets or budgets_of(scenario)
    answered = [j for j, r in enumerate(results) if r.gen is not None]
    correct, score = policy.judge(batch, decision.take(answered), right[:, answered]) if answered else (
        np.array([False]), np.array([0.0]))  # score only what came back
    extra = [r.gen.extra if r.gen else {} for r in results]

    def row(values) -> np.ndarray:
        return np.array([values], dtype=float)

    waited = row([_finite(x.get("queue_s")) for x in extra])
    held = np.nan_to_num(waited)  # as in the simulator: the wait for a free slot is queue_s, service starts after it
    first_token = row([(r.log[-1].start_s - r.start_s) + r.gen.ttft_s if r.gen else np.nan for r in results])
    worst_delay, worst_energy = policy.predicted_worst(batch.category)
    legs = Legs(
        query_id=np.array([qid]), category=batch.category, prompt_id=twin.quality.prompt_ids[batch.prompt],
        arrival_s=batch.arrival_s / speed, prompt_tokens=batch.prompt_tokens, output_tokens=batch.output_tokens,
        experts=decision.experts, weights=decision.weights, score=score, correct=correct,
        energy_J=row([_finite(x.get("energy_J")) for x in extra]), uplink_s=row([np.nan] * len(results)),
        queue_s=waited, ttft_s=first_token - held, decode_s=row([r.gen.decode_s if r.gen else np.nan for r in results]),
        downlink_s=row([np.nan] * len(results)), start_s=row([r.start_s for r in results]) + held,
        latency_budget_s=budgets.latency_s[batch.category], energy_budget_J=np.array([budgets.energy_J]),
        subset=np.array(["|".join(policy.subset)]), predicted_worst_delay_s=worst_delay,
        predicted_worst_energy_J=np.array([worst_energy]), failed=np.array([[r.gen is None for r in results]]),
        give_up_s=row([r.end_s for r in results]), attempts=np.array([[r.attempts for r in results]]),
        error=np.array([[r.error for r in results]], dtype=object),
        server_ttft_s=row([_finite(x.get("ttft_s")) for x in extra]),
        server_decode_s=row([_finite(x.get("decode_s")) for x in extra]))
    query, leg = legs.tables(policy.names, policy.aggregation_s)
    names = list(policy.names)
    query_row = {c: _plain(v[0]) for c, v in query.items()}
    query_row["category"] = scenario.categories[int(query_row["category"])].name
    leg_rows = [{c: _plain(v[j]) for c, v in leg.items()} for j in range(len(results))]
    for r in leg_rows:
        r["expert"] = names[int(r["expert"])]
    return query_row, leg_rows


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def attempt_rows(twin: Twin, qid: int, decision: Decision, results: list[LegResult]) -> list[dict[str, Any]]:
    names = [e.name for e in twin.experts]
    return [{"query_id": qid, "rank": j, "expert": names[n], **asdict(a)}
            for j, (n, r) in enumerate(zip(decision.experts[0], results)) for a in r.log]


class LiveRun:
    """One live run; `run()` returns (queries, legs); `attempts`, `interrupted`, `planned`, `sent` after."""

    def __init__(self, twin: Twin, endpoints: dict[str, str], speed: float = 1.0, retries: int | None = None,
                 seed: int | None = None, timeout_s: float = 120.0, connect_timeout_s: float | None = None,
                 read_timeout_s: float | None = None, retry_horizon_s: float = 30.0, journal: Path | None = None,
                 grace_s: float = 2.0):
        self.twin, self.speed, self.retries, self.seed = twin, speed, retries, seed
        self.policy = twin.policy  # the very policy object the simulator uses
        self.retry_horizon_s, self.grace_s = retry_horizon_s, grace_s
        names = [e.name for e in twin.experts]
        self.clients = [OpenAIBackend(endpoints[n], n, timeout_s, connect_timeout_s, read_timeout_s) for n in names]
        self.journal = (Journal(journal / JOURNAL, TITLE, fingerprint(twin.scenario.model_dump_json()), resume=False)
                        if journal is not None else None)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.queries: list[dict] = []
        self.legs: list[dict] = []
        self.attempts: list[dict] = []
        self.recorded: set[int] = set()
        self.in_flight: dict[int, tuple] = {}
        self.interrupted = False
        self.planned = self.sent = 0
        self.t_zero = time.perf_counter()

    def clock(self) -> float:
        return time.perf_counter() - self.t_zero

    def record(self, qid: int, batch: QueryBatch, decision: Decision, right: np.ndarray,
               results: list[LegResult]) -> None:
        """Build the query's rows and journal them; the first to record a query wins."""
        row, legs = records_of(self.twin, self.policy, qid, batch, decision, right, results, self.speed)
        attempts = attempt_rows(self.twin, qid, decision, results)
        with self.lock:
            if qid in self.recorded:
                return
            self.recorded.add(qid)
            self.in_flight.pop(qid, None)
            self.queries.append(row)
            self.legs.extend(legs)
            self.attempts.extend(attempts)
            if self.journal is not None:
                self.journal.append("query", [row])
                self.journal.append("leg", legs)
                self.journal.append("attempt", attempts)

    def serve_query(self, qid: int, batch: QueryBatch, decision: Decision, right: np.ndarray) -> None:
        twin = self.twin
        i_prompt = int(batch.prompt[0])
        question = str(twin.quality.prompts["question"].iloc[i_prompt])
        experts = decision.experts[0]
        try:
            with ThreadPoolExecutor(max_workers=len(experts)) as pool:
                results = list(pool.map(lambda n: call_with_retries(
                    self.clients[n], question, int(batch.prompt_tokens[0]), int(batch.output_tokens[0]),
                    self.clock, self.retry_horizon_s, self.retries, self.stop), experts))
        except Exception as exc:  # noqa: BLE001  never lose a query, whatever broke
            now = self.clock()
            results = [LegResult(None, now, now, 0, f"unexpected {type(exc).__name__}: {exc}") for _ in experts]
        try:
            self.record(qid, batch, decision, right, results)
        except Exception as exc:  # noqa: BLE001
            now = self.clock()
            self.record(qid, batch, decision, right, [LegResult(None, now, now, r.attempts,
                                                               f"unexpected {type(exc).__name__}: {exc}")
                                                     for r in results])

    def run(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        twin, policy = self.twin, self.policy
        arrivals, _, routing, outcomes = twin.streams(self.seed)
        batches = list(twin.workload.batches(arrivals))
        self.planned = sum(len(b) for b in batches)
        threads = []
        qid = 0
        self.t_zero = time.perf_counter()
        try:
            for batch in batches:
                for i in range(len(batch)):
                    one = batch.take(slice(i, i + 1))
                    wait = float(one.arrival_s[0]) / self.speed - self.clock()
                    if wait > 0:
                        time.sleep(wait)
                    decision = policy.decide(one, routing)
                    right = policy.outcomes.draw(one.prompt, decision.experts, outcomes)
                    with self.lock:
                        self.in_flight[qid] = (one, decision, right, self.clock())
                    th = threading.Thread(target=self.serve_query, args=(qid, one, decision, right), daemon=True)
                    th.start()
                    self.sent += 1
                    threads.append(th)
                    qid += 1
            for th in threads:
                th.join()
        except KeyboardInterrupt:
            self.interrupted = True
            self.stop.set()
            deadline = time.monotonic() + self.grace_s
            try:
                for th in threads:
                    th.join(max(0.0, deadline - time.monotonic()))
            except KeyboardInterrupt:
                pass
            with self.lock:
                stuck = dict(self.in_flight)
            now = self.clock()
            why = "interrupted (in flight when the run was stopped)"
            for q, (one, decision, right, sent_at) in stuck.items():
                self.record(q, one, decision, right, [LegResult(None, sent_at, now, 1, why, [Attempt(1, sent_at, now, why)])
                                                      for _ in decision.experts[0]])
        finally:
            if self.journal is not None:
                self.journal.close()
            for c in self.clients:
                c.close()
        return self.tables()

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        names = [e.name for e in self.twin.experts]
        with self.lock:
            q, g = pd.DataFrame(self.queries), pd.DataFrame(self.legs)
        if q.empty:
            return q, g
        q = q.sort_values("query_id", ignore_index=True)
        g = g.sort_values(["query_id", "rank"], ignore_index=True)
        q["category"] = pd.Categorical(q["category"], [c.name for c in self.twin.scenario.categories])
        g["expert"] = pd.Categorical(g["expert"], names)
        return q, g

    def attempt_table(self) -> pd.DataFrame:
        with self.lock:
            a = pd.DataFrame(self.attempts, columns=["query_id", "rank", "expert", "attempt", "start_s", "end_s",
                                                     "error"])
        return a.sort_values(["query_id", "rank", "attempt"], ignore_index=True)


def run_live(twin: Twin, endpoints: dict[str, str], speed: float = 1.0, retries: int | None = None,
             seed: int | None = None, timeout_s: float = 120.0, **options: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replay the scenario's arrivals in (scaled) real time through the policy onto the endpoints."""
    return LiveRun(twin, endpoints, speed, retries, seed, timeout_s, **options).run()
