"""`hardware live`: run a scenario's policy — the very object the simulator uses — against real
endpoints (one OpenAI-compatible URL per expert), with the scenario's arrival process in real
time (or compressed by `speed`: arrivals come `speed` times as fast, so the load is heavier),
writing per-query and per-leg records in the simulator's schema, times in wall-clock seconds from
the start.

Every query sent is recorded: a leg that still fails after its retries is recorded with its
error, and a query with any failed leg is scored on its answered legs only (wrong if none).

Leg timings are the client's, in the simulator's meaning: where the server reports how long the
request waited for a free slot (`hardware serve` does, as x_moe2sim.queue_s), that wait is queue_s
and is taken out of ttft_s, and start_s is when service began; an upstream server that does not
report it leaves queue_s NaN and its queueing inside ttft_s. server_ttft_s and server_decode_s are
the server's own timings (no network, no HTTP).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hardware.backends import BackendError, Generation, OpenAIBackend
from moe2sim.routing.routers import Decision
from moe2sim.selection.budgets import budgets_of
from moe2sim.twin import Twin
from moe2sim.workload import QueryBatch


@dataclass
class LegResult:
    gen: Generation | None
    start_s: float
    end_s: float
    attempts: int
    error: str


def call_with_retries(backend: OpenAIBackend, prompt: str, prompt_tokens: int, max_tokens: int,
                      retries: int, clock) -> LegResult:
    start = clock()
    error = ""
    for attempt in range(1, retries + 2):
        try:
            gen = backend.generate(prompt, prompt_tokens, max_tokens)
            return LegResult(gen, start, clock(), attempt, "")
        except BackendError as exc:
            error = str(exc)
            if not exc.retryable:
                break
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
    return LegResult(None, start, clock(), attempt, error)


def run_live(twin: Twin, endpoints: dict[str, str], speed: float = 1.0, retries: int = 2,
             seed: int | None = None, timeout_s: float = 120.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replay the scenario's arrivals in (scaled) real time through the policy onto the endpoints."""
    scenario, policy = twin.scenario, twin.policy
    names = [e.name for e in twin.experts]
    clients = [OpenAIBackend(endpoints[n], n, timeout_s) for n in names]
    questions = twin.quality.prompts["question"].astype(str).to_numpy()
    prompt_ids = twin.quality.prompt_ids
    budgets = policy.budgets or budgets_of(scenario)
    arrivals, _, routing = twin.streams(seed)
    batches = list(twin.workload.batches(arrivals))
    queries, legs = [], []
    lock = threading.Lock()
    t_zero = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - t_zero

    def serve_query(qid: int, batch: QueryBatch, decision: Decision, score: float) -> None:
        i_prompt = int(batch.prompt[0])
        experts = decision.experts[0]
        with ThreadPoolExecutor(max_workers=len(experts)) as pool:
            results = list(pool.map(lambda n: call_with_retries(
                clients[n], questions[i_prompt], int(batch.prompt_tokens[0]), int(batch.output_tokens[0]),
                retries, clock), experts))
        answered = [j for j, r in enumerate(results) if r.gen is not None]
        arrival = float(batch.arrival_s[0]) / speed
        finish = max(r.end_s for r in results) + policy.aggregation_s
        if len(answered) < len(experts):  # score only what came back
            sub = Decision(decision.experts[:, answered], decision.weights[:, answered])
            score = float(policy.aggregate(batch, sub)[0]) if answered else 0.0
        energy = [r.gen.extra.get("energy_J") if r.gen else None for r in results]
        energy_total = float(np.sum([e for e in energy if e is not None])) if all(
            e is not None for e in energy) else np.nan
        c = int(batch.category[0])
        worst_delay, worst_energy = policy.predicted_worst(batch.category)
        latency = finish - arrival
        subset = "|".join(n for n, ok in zip(names, policy.allowed) if ok)
        row = {"query_id": qid, "category": scenario.categories[c].name, "prompt_id": prompt_ids[i_prompt],
               "arrival_s": arrival, "finish_s": finish, "latency_s": latency,
               "prompt_tokens": int(batch.prompt_tokens[0]), "output_tokens": int(batch.output_tokens[0]),
               "experts": "|".join(names[n] for n in experts), "k": len(experts), "score": score,
               "correct": score > 0, "energy_J": energy_total, "latency_budget_s": budgets.latency_s[c],
               "latency_violation": latency > budgets.latency_s[c], "energy_budget_J": budgets.energy_J,
               "energy_violation": bool(energy_total > budgets.energy_J), "subset": subset,
               "predicted_worst_delay_s": worst_delay[0], "predicted_worst_energy_J": worst_energy, "error": "; ".join(r.error for r in results if r.error)}
        leg_rows = []
        for j, (n, r) in enumerate(zip(experts, results)):
            x = r.gen.extra if r.gen else {}
            # as in the simulator: the wait for a free slot is queue_s, service starts after it
            waited = x.get("queue_s") if x.get("queue_s") is not None else np.nan
            held = waited if np.isfinite(waited) else 0.0
            leg_rows.append({"query_id": qid, "rank": j, "expert": names[n], "weight": float(decision.weights[0, j]),
                             "uplink_s": np.nan, "queue_s": waited,
                             "ttft_s": r.gen.ttft_s - held if r.gen else np.nan,
                             "decode_s": r.gen.decode_s if r.gen else np.nan, "downlink_s": np.nan,
                             "start_s": r.start_s + held, "end_s": r.end_s,
                             "energy_J": x.get("energy_J", np.nan) if x.get("energy_J") is not None else np.nan,
                             "attempts": r.attempts, "error": r.error,
                             "server_ttft_s": x.get("ttft_s", np.nan), "server_decode_s": x.get("decode_s", np.nan)})
        with lock:
            queries.append(row)
            legs.extend(leg_rows)

    threads = []
    qid = 0
    for batch in batches:
        for i in range(len(batch)):
            one = batch.take(slice(i, i + 1))
            wait = float(one.arrival_s[0]) / speed - (time.perf_counter() - t_zero)
            if wait > 0:
                time.sleep(wait)
            decision = policy.decide(one, routing)
            score = float(policy.aggregate(one, decision)[0])
            th = threading.Thread(target=serve_query, args=(qid, one, decision, score))
            th.start()
            threads.append(th)
            qid += 1
    for th in threads:
        th.join()
    q = pd.DataFrame(queries).sort_values("query_id", ignore_index=True)
    g = pd.DataFrame(legs).sort_values(["query_id", "rank"], ignore_index=True)
    q["category"] = pd.Categorical(q["category"], [c.name for c in scenario.categories])
    g["expert"] = pd.Categorical(g["expert"], names)
    return q, g
