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

The journal (DIR/live.partial.jsonl, data/journal.py) is write-ahead: before a query's legs are sent,
one record of kind "send" per leg is appended and fsync'ed; when a query ends, its "query", "leg" and
"attempt" records. So after any crash (SIGKILL included) every query sent is in the journal: answered
(a "query" record without error), failed, or incomplete (only its "send" records). A query is
journaled as ended only if no leg of it was cut short by a stop.

Ctrl-C (`interrupt()`): no further query is sent, legs mid-stream or in backoff stop, the others get
`grace_s` to end; the queries still in flight are recorded as failed ("interrupted") in the results,
each leg that had already answered kept as the success it was, and they stay incomplete in the journal.

`resume`: a run into the same folder with the same scenario, seed and speed (the journal's fingerprint)
keeps the journal's answered queries and sends the others (failed, incomplete or never sent) whole, on the
scenario's schedule from the earliest of them (its clock starts at that query's arrival), so the
results hold every query once, in the schema of a fresh run. Without `resume` a folder that holds a
journal is refused: an earlier journal is never overwritten.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from moe2sim.hardware.backends import BackendError, Generation, OpenAIBackend
from moe2sim.data.journal import Journal, fingerprint, read
from moe2sim.errors import InputError
from moe2sim.policy import MixturePolicy
from moe2sim.routing.routers import Decision
from moe2sim.selection.budgets import budgets_of
from moe2sim.sim.records import Legs
from moe2sim.twin import Twin
from moe2sim.workload import QueryBatch

BACKOFF_S, BACKOFF_MAX_S = 0.25, 4.0
JOURNAL = "live.partial.jsonl"  # records of kinds "send" (write-ahead), "query", "leg", "attempt" (data/journal.py)
TITLE = "moe2sim live"
INTERRUPTED = "interrupted (in flight when the run was stopped)"


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
    interrupted: bool = False  # cut short by the run's stop: not an outcome, so --resume sends it again

    @classmethod
    def stopped(cls, sent_s: float, now: float) -> "LegResult":
        """A leg still in flight when the run was stopped."""
        return cls(None, sent_s, now, 1, INTERRUPTED, [Attempt(1, sent_s, now, INTERRUPTED)], interrupted=True)


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
    return LegResult(None, start, end, len(log), why, log, interrupted=stop.is_set())


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


def journal_fingerprint(twin: Twin, seed: int | None, speed: float) -> str:
    """What a live journal's records depend on: the scenario, the seed of its streams and the speed."""
    seed = twin.scenario.seed if seed is None else seed  # --seed 3 and no --seed on a seed-3 scenario: one run
    return fingerprint(json.dumps({"scenario": twin.scenario.model_dump_json(), "seed": seed, "speed": speed}))


def check_journal(folder: Path, mark: str, resume: bool) -> None:
    """Refuse, touching nothing, a fresh run into a folder holding a journal (an earlier run's: it is never
    overwritten) and a resume without a journal of this fingerprint (`mark`) to complete."""
    path = Path(folder) / JOURNAL
    header, entries = read(path)
    if not resume and path.exists():
        answered = sum(kind == "query" and not r.get("error") for kind, r in entries)
        sent = len({r.get("query_id") for kind, r in entries if kind == "send"})
        raise InputError("--out", str(folder), f"holds {JOURNAL}, the journal of a run that did not finish ({sent} "
                         f"queries sent, {answered} answered); it is kept: pass --resume to complete that run, or "
                         "choose another --out")
    if resume and header != {"journal": TITLE, "fingerprint": mark}:
        why = ("holds no live journal to resume" if header is None else
               "holds the journal of another run (scenario, --set, --seed or --speed differ)")
        raise InputError("--resume", str(path), f"{why}; resume with the run's own settings, or drop --resume")


def _restored(record: dict[str, Any]) -> dict[str, Any]:
    """A journaled record as the records builder made it (the journal writes NaN as null)."""
    return {k: np.nan if v is None else v for k, v in record.items()}


def endpoint_keys(twin: Twin) -> list[str | None]:
    """Each expert's bearer key, read from the environment variable its scenario entry names (`api_key_env`);
    None where it names none. A named variable that is unset or blank is an error naming the field (never
    the key)."""
    keys = []
    for i, expert in enumerate(twin.scenario.experts):
        var = expert.api_key_env
        key = os.environ.get(var, "").strip() if var else None
        if var and not key:
            raise InputError(twin.scenario.file, f"experts.{i}.api_key_env",
                             f"the environment variable {var} is not set (or blank): export the endpoint's key in it")
        keys.append(key)
    return keys


class LiveRun:
    """One live run; `run()` returns (queries, legs); `attempts`, `interrupted`, `planned`, `sent` after.
    `interrupt()` (a signal handler may call it) stops it as Ctrl-C does."""

    def __init__(self, twin: Twin, endpoints: dict[str, str], speed: float = 1.0, retries: int | None = None,
                 seed: int | None = None, timeout_s: float = 120.0, connect_timeout_s: float | None = None,
                 read_timeout_s: float | None = None, retry_horizon_s: float = 30.0, journal: Path | None = None,
                 grace_s: float = 2.0, resume: bool = False):
        self.twin, self.speed, self.retries, self.seed = twin, speed, retries, seed
        self.policy = twin.policy  # the very policy object the simulator uses
        self.retry_horizon_s, self.grace_s, self.resume = retry_horizon_s, grace_s, resume
        names = [e.name for e in twin.experts]
        keys = endpoint_keys(twin)
        self.clients = [OpenAIBackend(endpoints[n], n, timeout_s, connect_timeout_s, read_timeout_s, api_key=key)
                        for n, key in zip(names, keys)]
        self.mark = journal_fingerprint(twin, seed, speed)
        self.folder = Path(journal) if journal is not None else None
        if self.folder is not None:
            check_journal(self.folder, self.mark, resume)
        self.journal: Journal | None = None  # opened by run()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.queries: list[dict] = []
        self.legs: list[dict] = []
        self.attempts: list[dict] = []
        self.recorded: set[int] = set()
        self.sent_ids: set[int] = set()
        self.in_flight: dict[int, tuple] = {}
        self.interrupted = False
        self.planned = 0
        self.t_zero = time.perf_counter()

    @property
    def sent(self) -> int:
        """Queries sent, over every session of a resumed run."""
        return len(self.sent_ids)

    def clock(self) -> float:
        return time.perf_counter() - self.t_zero

    def interrupt(self) -> None:
        """Stop the run: no further query is sent, legs mid-stream or in backoff end (see `run`)."""
        self.interrupted = True
        self.stop.set()

    def _open_journal(self) -> None:
        """Open the journal; when resuming, take its answered queries (no failed leg) as done, with their
        records, and its sends as sent."""
        if self.folder is None:
            return
        self.journal = Journal(self.folder / JOURNAL, TITLE, self.mark, resume=self.resume, durable=True)
        self.recorded = {int(r["query_id"]) for r in self.journal.records("query") if not r["error"]}
        self.queries, self.legs, self.attempts = ([_restored(r) for r in self.journal.records(kind)
                                                   if r["query_id"] in self.recorded]
                                                  for kind in ("query", "leg", "attempt"))
        self.sent_ids = {int(r["query_id"]) for r in self.journal.records("send")}

    def record(self, qid: int, batch: QueryBatch, decision: Decision, right: np.ndarray,
               results: list[LegResult]) -> None:
        """Build the query's rows and keep them; journal them unless a leg was cut short by the stop (the
        query stays incomplete there). The first to record a query wins."""
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
            if self.journal is not None and not any(r.interrupted for r in results):
                self.journal.append("query", [row])
                self.journal.append("leg", legs)
                self.journal.append("attempt", attempts)

    def send(self, qid: int, batch: QueryBatch, decision: Decision, right: np.ndarray) -> threading.Thread:
        """Journal the query's legs as sent (write-ahead, fsync'ed), then serve it on its own thread."""
        names = [e.name for e in self.twin.experts]
        results: list[LegResult | None] = [None] * decision.experts.shape[1]
        sent_s = self.clock()
        with self.lock:
            self.in_flight[qid] = (batch, decision, right, sent_s, results)
            self.sent_ids.add(qid)
        if self.journal is not None:
            self.journal.append("send", [{"query_id": qid, "rank": j, "expert": names[n], "sent_s": sent_s}
                                         for j, n in enumerate(decision.experts[0])])
        thread = threading.Thread(target=self.serve_query, args=(qid, batch, decision, right, results), daemon=True)
        thread.start()
        return thread

    def serve_query(self, qid: int, batch: QueryBatch, decision: Decision, right: np.ndarray,
                    results: list[LegResult | None]) -> None:
        """The query's legs at once, one daemon thread each (nothing waits for a hanging one at exit)."""
        question = str(self.twin.quality.prompts["question"].iloc[int(batch.prompt[0])])

        def leg(j: int, n: int) -> None:
            results[j] = call_with_retries(self.clients[n], question, int(batch.prompt_tokens[0]),
                                           int(batch.output_tokens[0]), self.clock, self.retry_horizon_s,
                                           self.retries, self.stop)

        threads = [threading.Thread(target=leg, args=(j, int(n)), daemon=True)
                   for j, n in enumerate(decision.experts[0])]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        now = self.clock()
        done = [r or LegResult(None, now, now, 0, "unexpected: the leg ended without a result") for r in results]
        try:
            self.record(qid, batch, decision, right, done)
        except Exception as exc:  # noqa: BLE001  never lose a query, whatever broke
            self.record(qid, batch, decision, right, [LegResult(None, now, now, r.attempts,
                                                               f"unexpected {type(exc).__name__}: {exc}")
                                                     for r in done])

    def plan(self) -> list[tuple[QueryBatch, Decision, np.ndarray]]:
        """Every query of the scenario with its routing decision and drawn outcomes, in arrival order (the
        same for a fresh run and a resumed one: the streams are drawn in full)."""
        twin, policy = self.twin, self.policy
        arrivals, _, routing, outcomes = twin.streams(self.seed)
        plan = []
        for batch in twin.workload.batches(arrivals):
            for i in range(len(batch)):
                one = batch.take(slice(i, i + 1))
                decision = policy.decide(one, routing)
                plan.append((one, decision, policy.outcomes.draw(one.prompt, decision.experts, outcomes)))
        return plan

    def run(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Send the queries not yet answered at their arrival times (scaled by speed), wait for them all or
        for a stop (`interrupt()` or Ctrl-C); after a stop, wind down (`wind_down`)."""
        plan = self.plan()
        self.planned = len(plan)
        threads = []
        try:
            self._open_journal()
            todo = [q for q in range(len(plan)) if q not in self.recorded]
            start_s = float(plan[todo[0]][0].arrival_s[0]) / self.speed if self.resume and todo else 0.0
            self.t_zero = time.perf_counter() - start_s
            for qid in todo:
                one, decision, right = plan[qid]
                if self.stop.wait(max(0.0, float(one.arrival_s[0]) / self.speed - self.clock())):
                    break
                threads.append(self.send(qid, one, decision, right))
            for th in threads:
                while th.is_alive() and not self.stop.wait(0.1):
                    th.join(0.1)
        except KeyboardInterrupt:
            self.interrupt()
        try:
            if self.stop.is_set():
                self.wind_down(threads)
        finally:
            with self.lock:
                if self.journal is not None:
                    self.journal.close()
                self.journal = None
            for c in self.clients:  # never blocks: a leg still waiting on a hanging endpoint is a daemon thread
                c.close()
        return self.tables()

    def wind_down(self, threads: list[threading.Thread]) -> None:
        """After a stop: `grace_s` for the legs to end, then the queries still in flight are recorded as
        failed, each leg that had answered kept as it was, the others "interrupted"."""
        deadline = time.monotonic() + self.grace_s
        for th in threads:
            th.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            stuck = dict(self.in_flight)
        now = self.clock()
        for q, (one, decision, right, sent_s, results) in stuck.items():
            self.record(q, one, decision, right, [r or LegResult.stopped(sent_s, now) for r in results])

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
