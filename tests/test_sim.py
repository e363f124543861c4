"""The simulator end to end: determinism, latency and energy accounting, policies, trace replay."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TRACES, quickstart_raw
from moe2sim.report.summary import summarize
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin

NAMES = ["mistral-7b", "metamath-7b", "llama3-8b"]
MODELS = {"mistral-7b": "mistralai/Mistral-7B-v0.1", "metamath-7b": "meta-math/MetaMath-Mistral-7B",
          "llama3-8b": "meta-llama/Meta-Llama-3-8B"}
CATS = ["mmlu", "gsm8k", "arc_challenge", "humaneval"]


def build(write_scenario, raw=None, name="scenario.yaml") -> Twin:
    return Twin.build(load_scenario(write_scenario(name=name, base=raw if raw is not None else small_raw())))


def small_raw(queries: int = 1500, rate: float = 0.5) -> dict:
    raw = quickstart_raw()
    raw["queries"] = queries
    raw["arrivals"]["rate_per_s"] = rate  # busy enough that queues form
    return raw


@pytest.fixture
def run(write_scenario):
    twin = build(write_scenario)
    result, queries, legs = twin.simulate(seed=3)
    return twin, result, queries, legs


def test_same_seed_identical_records(write_scenario):
    twin = build(write_scenario)
    _, q1, l1 = twin.simulate(seed=11)
    _, q2, l2 = twin.simulate(seed=11)
    pd.testing.assert_frame_equal(q1, q2)
    pd.testing.assert_frame_equal(l1, l2)
    # A freshly built twin from the same file gives the same run too.
    _, q3, _ = build(write_scenario, name="again.yaml").simulate(seed=11)
    pd.testing.assert_frame_equal(q1, q3)


def test_different_seed_different_records(write_scenario):
    twin = build(write_scenario)
    _, q1, _ = twin.simulate(seed=11)
    _, q2, _ = twin.simulate(seed=12)
    assert not q1["arrival_s"].equals(q2["arrival_s"])
    assert not q1["latency_s"].equals(q2["latency_s"])


def test_scenario_seed_is_the_default(write_scenario):
    raw = small_raw()
    raw["seed"] = 11
    _, q1, _ = build(write_scenario, raw).simulate()
    _, q2, _ = build(write_scenario, small_raw(), name="s2.yaml").simulate(seed=11)
    pd.testing.assert_frame_equal(q1, q2)


def test_latency_decomposition(run):
    twin, _, queries, legs = run
    k = twin.scenario.policy.k
    assert len(legs) == k * len(queries)
    assert (legs["queue_s"] >= -1e-9).all()
    assert (legs["queue_s"] > 0.5).any()  # queues do form at this load
    back = (legs["end_s"] + legs["downlink_s"]).groupby(legs["query_id"]).max()
    expected = back.to_numpy() - queries["arrival_s"].to_numpy() + twin.scenario.policy.aggregation_s
    np.testing.assert_allclose(queries["latency_s"], expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(queries["finish_s"] - queries["arrival_s"], queries["latency_s"], atol=1e-9)
    # Each leg: reach the expert, queue, TTFT, decode.
    arrival = queries["arrival_s"].to_numpy()[legs["query_id"]]
    np.testing.assert_allclose(legs["start_s"], arrival + legs["uplink_s"] + legs["queue_s"], atol=1e-9)
    np.testing.assert_allclose(legs["end_s"], legs["start_s"] + legs["ttft_s"] + legs["decode_s"], atol=1e-9)
    assert (legs["ttft_s"] > 0).all() and (legs["decode_s"] > 0).all()


def test_link_delays(run):
    """uplink = prompt bytes · 8 / uplink rate + propagation; downlink = 4 bytes/token likewise."""
    twin, _, queries, legs = run
    link = twin.scenario.experts[0].link  # quickstart uses the default link everywhere
    q = queries.set_index("query_id").loc[legs["query_id"]]
    prompts = twin.quality.prompts.set_index("prompt_id").loc[q["prompt_id"]]
    up = prompts["prompt_bytes"].to_numpy() * 8 / (link.uplink_Mbps * 1e6) + link.propagation_s
    down = q["output_tokens"].to_numpy() * 4 * 8 / (link.downlink_Mbps * 1e6) + link.propagation_s
    np.testing.assert_allclose(legs["uplink_s"], up, rtol=1e-12)
    np.testing.assert_allclose(legs["downlink_s"], down, rtol=1e-12)


def test_latency_budget_violations(run):
    _, _, queries, _ = run
    budgets = {"mmlu": 3.0, "gsm8k": 6.0, "arc_challenge": 3.0, "humaneval": 6.0}
    b = queries["category"].astype(str).map(budgets).to_numpy()
    np.testing.assert_array_equal(queries["latency_budget_s"], b)
    np.testing.assert_array_equal(queries["latency_violation"], queries["latency_s"].to_numpy() > b)
    np.testing.assert_array_equal(queries["energy_violation"], queries["energy_J"].to_numpy() > 300)


def load_profile_yaml(name: str) -> dict:
    return yaml.safe_load((TRACES / "profiles" / f"{name}.yaml").read_text())


def test_energy_accounting(run):
    twin, result, queries, legs = run
    per_query = legs.groupby("query_id")["energy_J"].sum()
    np.testing.assert_allclose(queries["energy_J"], per_query.to_numpy(), rtol=1e-12)
    # Profile service: (P_prefill - P_idle)·ttft + (P_decode - P_idle)·decode, from the YAML itself.
    profile_of = {e.name: e.profile for e in twin.scenario.experts}
    for name, g in legs.groupby("expert", observed=True):
        prof = load_profile_yaml(profile_of[name])
        idle = prof["idle_power_W"]["value"]
        expected = ((prof["prefill_power_W"]["value"] - idle) * g["ttft_s"]
                    + (prof["decode_power_W"]["value"] - idle) * g["decode_s"])
        np.testing.assert_allclose(g["energy_J"], expected, rtol=1e-12)
        # ... and the latency model from the same YAML.
        q = queries.set_index("query_id").loc[g["query_id"]]
        ttft = prof["ttft_base_s"]["value"] + q["prompt_tokens"].to_numpy() / prof["prefill_tokens_per_s"]["value"]
        np.testing.assert_allclose(g["ttft_s"], ttft, rtol=1e-12)
        np.testing.assert_allclose(g["decode_s"], q["output_tokens"].to_numpy()
                                   / prof["decode_tokens_per_s"]["value"], rtol=1e-12)


def summary_of(twin, result, queries, legs) -> dict:
    return summarize(queries, legs, {e.name: e.idle_power_W for e in twin.experts},
                     {e.name: e.slots for e in twin.experts}, result.run_s)


def test_summary_idle_energy_and_utilisation(run):
    twin, result, queries, legs = run
    s = summary_of(twin, result, queries, legs)
    idle_w = [load_profile_yaml(e.profile)["idle_power_W"]["value"] for e in twin.scenario.experts]
    assert s["energy_J_idle_total"] == pytest.approx(sum(idle_w) * result.run_s, rel=1e-12)
    assert s["energy_J_total"] == pytest.approx(s["energy_J_idle_total"] + queries["energy_J"].sum(), rel=1e-12)
    assert s["energy_J_per_query"] == pytest.approx(queries["energy_J"].mean(), rel=1e-12)
    assert result.run_s == pytest.approx(legs["end_s"].max())
    for e in twin.experts:
        block = s["experts"][e.name]
        g = legs[legs["expert"] == e.name]
        assert 0.0 <= block["utilisation"] <= 1.0
        busy = (g["ttft_s"] + g["decode_s"]).sum()
        assert block["utilisation"] == pytest.approx(busy / (e.slots * result.run_s), rel=1e-12)
        assert block["legs"] == len(g)
        assert block["energy_J_idle"] == pytest.approx(e.idle_power_W * result.run_s)
    assert sum(b["queries"] for b in s["categories"].values()) == len(queries)


def test_utilisation_near_one_under_overload(write_scenario):
    raw = small_raw(queries=2000, rate=20.0)
    raw["experts"][0]["slots"] = 2
    twin = build(write_scenario, raw)
    result, queries, legs = twin.simulate(seed=1)
    s = summary_of(twin, result, queries, legs)
    util = [s["experts"][n]["utilisation"] for n in NAMES]
    assert all(0.0 <= u <= 1.0 for u in util)
    assert max(util) > 0.95  # the bottleneck expert is saturated


def train_accuracy() -> pd.DataFrame:
    """accuracy[category, expert model] on the train split, recomputed from the bundled traces."""
    prompts = pd.read_parquet(TRACES / "prompts.parquet")
    quality = pd.read_parquet(TRACES / "quality.parquet")
    train = prompts[prompts["split"].astype(str) == "train"][["prompt_id", "task"]]
    df = quality.merge(train, on="prompt_id")
    df["task"] = df["task"].astype(str)
    df["expert"] = df["expert"].astype(str)
    # the published rule: GSM8K and HumanEval by the mean score, the multiple-choice tasks by score > 0
    df["right"] = np.where(df["task"].isin(["gsm8k", "humaneval"]), df["score"], df["correct"].astype(float))
    return df.groupby(["task", "expert"])["right"].mean().unstack()


@pytest.mark.parametrize("k", [1, 2])
def test_prior_accuracy_picks_top_k_by_train_accuracy(write_scenario, k):
    raw = small_raw(queries=1000)
    raw["policy"] = {"name": "prior_accuracy", "k": k}
    twin = build(write_scenario, raw)
    _, queries, legs = twin.simulate(seed=2)
    acc = train_accuracy()
    legs = legs.merge(queries[["query_id", "category"]], on="query_id")
    for cat in CATS:
        scores = pd.Series({n: acc.loc[cat, MODELS[n]] for n in NAMES}).sort_values(ascending=False, kind="stable")
        assert scores.iloc[k - 1] > scores.iloc[k], "ambiguous top-k; test set-up needs distinct accuracies"
        top = list(scores.index[:k])
        g = legs[legs["category"] == cat]
        assert len(g), cat
        by_rank = g.groupby("rank")["expert"].agg(lambda s: set(s.astype(str)))
        # Rank j of every query of the category is the j-th most accurate expert.
        assert [by_rank[j] for j in range(k)] == [{top[j]} for j in range(k)], (cat, scores.to_dict())
        # Weights are proportional to the train accuracies.
        w = g.groupby("rank")["weight"].first().to_numpy()
        np.testing.assert_allclose(w, scores.iloc[:k].to_numpy() / scores.iloc[:k].sum(), rtol=1e-6)


def test_fixed_subset_uses_exactly_the_subset(write_scenario):
    raw = small_raw(queries=800)
    raw["policy"] = {"name": "fixed_subset", "k": 2, "subset": ["llama3-8b", "mistral-7b"],
                     "aggregation": "highest_weight"}
    twin = build(write_scenario, raw)
    _, queries, legs = twin.simulate(seed=2)
    assert set(legs["expert"].astype(str)) == {"llama3-8b", "mistral-7b"}
    assert (legs.loc[legs["rank"] == 0, "expert"] == "llama3-8b").all()
    assert (legs.loc[legs["rank"] == 1, "expert"] == "mistral-7b").all()
    np.testing.assert_allclose(legs["weight"], 0.5, atol=1e-4)  # (near-)equal weights
    assert (queries["experts"] == "llama3-8b|mistral-7b").all()
    # Highest-weight aggregation takes the first-listed expert: the query's probability of a right answer
    # is llama3-8b's under the task's rule, and its drawn outcome is right only where that is possible.
    p = twin.policy.outcomes.p[:, NAMES.index("llama3-8b")]
    row = pd.Series(np.arange(len(twin.quality.prompt_ids)), index=twin.quality.prompt_ids).loc[queries["prompt_id"]]
    np.testing.assert_allclose(queries["score"], p[row.to_numpy()], rtol=1e-6)
    assert not queries["correct"][queries["score"] == 0].any() and queries["correct"][queries["score"] == 1].all()
    assert abs(queries["correct"].mean() - queries["score"].mean()) < 0.05  # the draws follow the probabilities


def test_fixed_subset_k1_single_expert(write_scenario):
    raw = small_raw(queries=500)
    raw["policy"] = {"name": "fixed_subset", "k": 1, "subset": ["metamath-7b"]}
    _, _, legs = build(write_scenario, raw).simulate(seed=2)
    assert set(legs["expert"].astype(str)) == {"metamath-7b"}


def test_trace_replay_service_draws_from_model_warm_rows(write_scenario):
    """Each leg is a warm row of the nearest trace shape (log space), rescaled to the query's shape by the
    profile fitted to the trace: q = q(row) · q_fit(query) / q_fit(row shape)."""
    raw = small_raw(queries=1500)
    raw["experts"] = [{"name": "h200", "model": MODELS["llama3-8b"], "profile": "h200-llama-3.1-8b",
                       "service": {"file": "devices/h200_probe.csv", "model": "llama-3.1-8b"}}]
    raw["policy"] = {"name": "fixed_subset", "k": 1}
    # Output lengths spread over the trace's shapes (32..256 tokens).
    for c in raw["categories"]:
        c["output_tokens"] = {"dist": "lognormal", "mean": 100, "cv": 0.8}
    twin = build(write_scenario, raw)
    with pytest.warns(UserWarning, match="outside the measured"):
        _, queries, legs = twin.simulate(seed=4)
    replay = twin.experts[0].service
    trace = pd.read_csv(TRACES / "devices" / "h200_probe.csv")
    warm = trace[(trace["model"] == "llama-3.1-8b") & trace["warm"]]
    q = queries.set_index("query_id").loc[legs["query_id"]]
    p, o = q["prompt_tokens"].to_numpy(float), q["output_tokens"].to_numpy(float)
    shapes = warm[["prompt_tokens", "output_tokens"]].drop_duplicates().to_numpy(float)
    query = np.log(np.c_[p, o])
    nearest = shapes[np.argmin(((query[:, None] - np.log(shapes)[None]) ** 2).sum(-1), axis=1)]
    want, have = replay.predict(p, o), replay.predict(nearest[:, 0], nearest[:, 1])
    # Undo the rescaling: the leg must then be one of the nearest shape's warm rows.
    raw_ttft = legs["ttft_s"].to_numpy() * have[0] / want[0]
    raw_dec = legs["decode_s"].to_numpy() * have[1] / want[1]
    raw_energy = legs["energy_J"].to_numpy() * have[2] / want[2]
    used = set()
    for t, d, e, (sp, so) in zip(raw_ttft, raw_dec, raw_energy, nearest):
        rows = warm[(warm["prompt_tokens"] == sp) & (warm["output_tokens"] == so)]
        match = np.isclose(rows["ttft_s"], t, rtol=1e-9) & np.isclose(rows["decode_s"], d, rtol=1e-9) \
            & np.isclose(rows["active_energy_J"], e, rtol=1e-9)
        assert match.any(), "service values are not a rescaled warm row of the nearest shape"
        used.add(int(rows.index[match.argmax()]))
    assert len(used) >= 5  # several shapes and repetitions are used
    exact = (p[:, None] == shapes[None, :, 0]).any(1) & (o[:, None] == shapes[None, :, 1]).any(1)
    assert not np.allclose(legs["decode_s"].to_numpy()[~exact], raw_dec[~exact])  # other shapes are rescaled
