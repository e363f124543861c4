"""The fine level of MoE²: top-k of the allowed subset with renormalised softmax weights
(moe2sim.policy.topk_in_subset, MixturePolicy) and the ways the k answers are combined
(moe2sim.aggregation: HighestWeight, Oracle, WeightedVote)."""
from __future__ import annotations

import numpy as np
import pytest

from moe2sim.routing.aggregation import HighestWeight, Oracle, Outcomes, WeightedVote, expected_correct
from moe2sim.policy import MixturePolicy
from moe2sim.routing.routers import FixedRouter, GateRouter, topk_in_subset
from moe2sim.workload import QueryBatch


def reference_topk(logits: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force, one row at a time: sort the allowed experts by logit, keep k, softmax over them."""
    experts, weights = [], []
    candidates = np.flatnonzero(allowed)
    for row in logits:
        chosen = sorted(candidates, key=lambda e: -row[e])[:k]
        z = np.array([row[e] for e in chosen], dtype=np.float64)
        w = np.exp(z - z.max())
        experts.append(chosen)
        weights.append(w / w.sum())
    return np.array(experts), np.array(weights)


def batch_of(prompts: np.ndarray, categories: np.ndarray | None = None) -> QueryBatch:
    n = len(prompts)
    ones = np.ones(n, np.int64)
    return QueryBatch(arrival_s=np.arange(n, dtype=float), category=np.zeros(n, np.int64) if categories is None
                      else categories, prompt=np.asarray(prompts, np.int64), prompt_tokens=ones,
                      output_tokens=ones, prompt_bytes=ones)


# --- topk_in_subset ----------------------------------------------------------------------------

def test_topk_picks_largest_allowed_logits():
    logits = np.array([[5.0, 1.0, 3.0, 4.0, 2.0],
                       [0.0, 9.0, 8.0, -1.0, 7.0]])
    allowed = np.array([False, True, True, False, True])  # the two largest of row 0 are excluded
    experts, weights = topk_in_subset(logits, allowed, 2)
    np.testing.assert_array_equal(experts, [[2, 4], [1, 2]])
    # softmax of the chosen logits, renormalised over the two
    np.testing.assert_allclose(weights[0], np.exp([3.0, 2.0]) / np.exp([3.0, 2.0]).sum())
    np.testing.assert_allclose(weights[1], np.exp([9.0, 8.0]) / np.exp([9.0, 8.0]).sum())


def test_topk_never_leaves_subset_even_when_outside_logits_dominate():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 6))
    allowed = np.array([True, False, True, False, False, True])
    logits[:, ~allowed] += 100.0  # everything outside S ranks first
    for k in (1, 2, 3):
        experts, weights = topk_in_subset(logits, allowed, k)
        assert experts.shape == weights.shape == (200, k)
        assert np.isin(experts, np.flatnonzero(allowed)).all()
        assert np.all(np.isfinite(weights)) and np.all(weights > 0)


def test_topk_k_equal_subset_size_returns_whole_subset():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 7))
    allowed = np.zeros(7, bool)
    allowed[[1, 4, 6]] = True
    experts, weights = topk_in_subset(logits, allowed, 3)
    for row, w in zip(experts, weights):
        assert sorted(row) == [1, 4, 6]
        assert w.sum() == pytest.approx(1.0)
    # k equal to the number of experts (all allowed): every expert, by descending logit
    experts, weights = topk_in_subset(logits, np.ones(7, bool), 7)
    np.testing.assert_array_equal(experts, np.argsort(-logits, axis=1))
    np.testing.assert_allclose(weights, np.exp(np.sort(logits, axis=1)[:, ::-1])
                               / np.exp(logits).sum(axis=1, keepdims=True))


def test_topk_weights_sum_to_one_and_descend():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(500, 5))
    experts, weights = topk_in_subset(logits, np.ones(5, bool), 3)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert np.all(np.diff(weights, axis=1) <= 0)
    # weights follow the logits of the experts they belong to
    chosen = np.take_along_axis(logits, experts, axis=1)
    assert np.all(np.diff(chosen, axis=1) <= 0)


def test_topk_weights_are_invariant_to_logit_shift_and_large_values():
    """Softmax renormalised over the k: adding a constant to all logits changes nothing, and huge
    logits do not overflow."""
    logits = np.array([[1000.0, 999.0, 998.0, -5.0]])
    experts, weights = topk_in_subset(logits, np.ones(4, bool), 3)
    shifted_experts, shifted = topk_in_subset(logits - 1000.0, np.ones(4, bool), 3)
    np.testing.assert_array_equal(experts, shifted_experts)
    np.testing.assert_allclose(weights, shifted)
    assert np.all(np.isfinite(weights))


@pytest.mark.parametrize("seed", range(20))
def test_topk_matches_brute_force(seed: int):
    rng = np.random.default_rng(seed)
    n_experts = int(rng.integers(1, 9))
    allowed = rng.random(n_experts) < 0.6
    if not allowed.any():
        allowed[rng.integers(n_experts)] = True
    k = int(rng.integers(1, allowed.sum() + 1))
    logits = rng.normal(scale=float(rng.choice([0.1, 1.0, 10.0])), size=(int(rng.integers(1, 40)), n_experts))
    experts, weights = topk_in_subset(logits, allowed, k)
    ref_experts, ref_weights = reference_topk(logits, allowed, k)
    np.testing.assert_array_equal(experts, ref_experts)
    np.testing.assert_allclose(weights, ref_weights, rtol=1e-12, atol=1e-15)


# --- HighestWeight, Oracle ---------------------------------------------------------------------

RIGHT = np.array([[False, True, True, False],
                  [True, False, False, False],
                  [False, False, False, False]])


def legs_right(prompts: np.ndarray, experts: np.ndarray) -> np.ndarray:
    return RIGHT[prompts[:, None], experts]


def test_highest_weight_follows_the_top_weight_expert():
    prompts = np.array([0, 0, 1, 2])
    experts = np.array([[1, 2], [2, 3], [1, 0], [0, 3]])
    weights = np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.5, 0.5]])
    # row 1: expert 3 carries the larger weight (weights need not be listed in order)
    np.testing.assert_array_equal(HighestWeight().correct(prompts, experts, weights, legs_right(prompts, experts)),
                                  [True, False, False, False])


def test_oracle_is_right_when_any_chosen_expert_is():
    prompts = np.array([0, 0, 1, 1, 2])
    experts = np.array([[0, 3], [3, 2], [1, 0], [1, 2], [0, 1]])
    weights = np.full((5, 2), 0.5)
    np.testing.assert_array_equal(Oracle().correct(prompts, experts, weights, legs_right(prompts, experts)),
                                  [False, True, True, False, False])


# --- WeightedVote, hand-built cases --------------------------------------------------------------

def vote(right: list[list[bool]], wrong: list[list[int]], experts: list[list[int]],
         weights: list[list[float]]) -> np.ndarray:
    """The vote with given outcomes; wrong[i][j]: the answer id a wrong expert j gives on prompt i."""
    agg = WeightedVote(np.array(wrong))
    n = len(experts)
    prompts = np.arange(n) % len(right)
    experts = np.array(experts)
    return agg.correct(prompts, experts, np.array(weights, float), np.array(right)[prompts[:, None], experts])


def test_vote_two_right_experts_outvote_heavier_wrong_one():
    # expert 0 is wrong (weight 0.4); experts 1 and 2 are right (0.3 + 0.3)
    assert vote([[False, True, True]], [[2, 5, 6]], [[0, 1, 2]], [[0.4, 0.3, 0.3]])[0]


def test_vote_wrong_experts_on_same_option_outvote_single_right_one():
    assert not vote([[True, False, False]], [[1, 2, 2]], [[0, 1, 2]], [[0.4, 0.35, 0.25]])[0]
    # ... but not when they picked different wrong options
    assert vote([[True, False, False]], [[1, 2, 3]], [[0, 1, 2]], [[0.4, 0.35, 0.25]])[0]


def test_vote_free_form_wrong_answers_never_agree():
    agg = WeightedVote.assumed_answers(4, np.array([0]), seed=0)
    right = np.array([[True, False, False, False]])
    # three wrong experts with 0.6 of the weight against one right expert with 0.4
    assert agg.correct(np.array([0]), np.array([[0, 1, 2, 3]]), np.array([[0.4, 0.2, 0.2, 0.2]]), right)[0]
    # the same split on a 2-option prompt: every wrong expert picked the one wrong option
    agg = WeightedVote.assumed_answers(4, np.array([2]), seed=0)
    assert not agg.correct(np.array([0]), np.array([[0, 1, 2, 3]]), np.array([[0.4, 0.2, 0.2, 0.2]]), right)[0]


def test_vote_tie_goes_to_higher_weighted_expert():
    # totals 0.5 (expert 0 alone) and 0.25 + 0.25 (experts 1, 2): exact tie in binary fractions
    assert not vote([[False, True, True]], [[1, 1, 1]], [[0, 1, 2]], [[0.5, 0.25, 0.25]])[0]
    assert vote([[True, False, False]], [[1, 1, 1]], [[0, 1, 2]], [[0.5, 0.25, 0.25]])[0]
    # the heaviest expert listed last: still its answer wins the tie
    assert not vote([[False, True, True]], [[1, 1, 1]], [[1, 2, 0]], [[0.25, 0.25, 0.5]])[0]
    assert vote([[True, False, False]], [[1, 1, 1]], [[1, 2, 0]], [[0.25, 0.25, 0.5]])[0]
    # two experts, equal weights, different answers: the first listed of equal weights wins
    assert vote([[False, True]], [[1, 1]], [[1, 0]], [[0.5, 0.5]])[0]
    assert not vote([[False, True]], [[1, 1]], [[0, 1]], [[0.5, 0.5]])[0]


# --- WeightedVote.assumed_answers ----------------------------------------------------------------

def assumed_case(seed: int = 0):
    rng = np.random.default_rng(123)
    n, m = 400, 6
    options = rng.choice([0, 2, 4, 5], size=n)
    return options, WeightedVote.assumed_answers(m, options, seed)


def test_assumed_wrong_answers_are_wrong_options():
    options, agg = assumed_case()
    assert np.all(agg.wrong != 0)
    mc = np.broadcast_to(options[:, None] > 0, agg.wrong.shape)
    upper = np.broadcast_to(options[:, None] - 1, agg.wrong.shape)
    assert np.all(agg.wrong[mc] >= 1) and np.all(agg.wrong[mc] <= upper[mc])
    assert np.all(agg.wrong[options == 2] == 1)  # 2 options: the only wrong option is 1
    assert set(agg.wrong[options == 5].ravel()) == {1, 2, 3, 4}  # every wrong option of a 5-option prompt


def test_assumed_answers_free_form_wrong_answers_distinct_per_expert():
    options, agg = assumed_case()
    free = agg.wrong[options == 0]
    assert len(free) and all(len(set(row.tolist())) == len(row) for row in free)


def test_assumed_answers_seeded():
    options, a = assumed_case(seed=0)
    _, b = assumed_case(seed=0)
    _, c = assumed_case(seed=1)
    np.testing.assert_array_equal(a.wrong, b.wrong)
    assert not np.array_equal(a.wrong, c.wrong)
    fixed = (options == 0) | (options == 2)  # only the wrong multiple-choice answers depend on the seed
    np.testing.assert_array_equal(a.wrong[fixed], c.wrong[fixed])


def random_case(n: int = 2000, m: int = 5, seed: int = 7):
    rng = np.random.default_rng(seed)
    scores = np.where(rng.random((n, m)) < 0.5, rng.random((n, m)) + 0.01, 0.0).astype(np.float32)
    expected = rng.random(n) < 0.5
    return rng, Outcomes.of(scores, expected), rng.choice([0, 2, 4], size=n), rng.normal(size=(n, m))


def test_weighted_vote_with_k2_equals_highest_weight():
    """With two experts the vote cannot differ from following the heavier one: if they agree, both
    return the same answer; if they disagree, each answer's total is its own expert's weight, so the
    heavier expert's answer has the larger total, and an exact tie goes to the expert listed first
    among equal weights — the one HighestWeight (argmax, first of equals) also picks. Checked on
    random logits, subsets and drawn outcomes, multiple-choice and free-form."""
    rng, outcomes, options, logits = random_case()
    n, m = logits.shape
    logits[::7, 1] = logits[::7, 3]  # some exact ties in weight
    vote_agg = WeightedVote.assumed_answers(m, options, seed=3)
    prompts = np.arange(n)
    for allowed in (np.ones(m, bool), np.array([False, True, True, False, True]), np.array([0, 1, 0, 1, 0], bool)):
        experts, weights = topk_in_subset(logits, allowed, 2)
        right = outcomes.draw(prompts, experts, rng)
        np.testing.assert_array_equal(vote_agg.correct(prompts, experts, weights, right),
                                      HighestWeight().correct(prompts, experts, weights, right))


# --- the published scoring rule: threshold and expected tasks ------------------------------------------

def test_outcomes_follow_each_tasks_rule():
    scores = np.array([[0.0, 0.3, 1.0], [0.0, 0.3, 1.0]], np.float32)
    outcomes = Outcomes.of(scores, np.array([False, True]))  # prompt 0 threshold, prompt 1 expected
    np.testing.assert_allclose(outcomes.p, [[0.0, 1.0, 1.0], [0.0, 0.3, 1.0]], rtol=1e-6)


@pytest.mark.parametrize("aggregator", [HighestWeight(), Oracle(), "vote"], ids=["highest", "oracle", "vote"])
def test_expected_correct_is_the_mean_of_the_draws(aggregator):
    """The exact expectation over the 2^k outcome patterns equals the Monte-Carlo mean of seeded draws."""
    rng, outcomes, options, logits = random_case(n=300, m=5, seed=2)
    agg = WeightedVote.assumed_answers(5, options, seed=1) if aggregator == "vote" else aggregator
    prompts = np.arange(300)
    experts, weights = topk_in_subset(logits, np.ones(5, bool), 3)
    exact = expected_correct(agg, outcomes, prompts, experts, weights)
    draws = np.mean([agg.correct(prompts, experts, weights, outcomes.draw(prompts, experts, rng))
                     for _ in range(2000)], axis=0)
    assert np.abs(draws - exact).max() < 0.05  # 2000 draws: SE ≤ 0.011 per prompt
    assert abs(draws.mean() - exact.mean()) < 0.005
    deterministic = outcomes.p[prompts[:, None], experts]
    fixed = np.all((deterministic == 0) | (deterministic == 1), axis=1)
    right = deterministic.astype(bool)
    np.testing.assert_array_equal(exact[fixed], agg.correct(prompts, experts, weights, right)[fixed])


def test_published_per_model_accuracies_are_reproduced():
    """RouterDC's evaluation (train_router_mdeberta.py, shuhao02/RouterDC): MMLU and ARC-C right iff
    score > 0, GSM8K and HumanEval the mean score. Test split, Mistral-7B and dolphin-2.9-llama3-8b."""
    from conftest import TRACES
    from moe2sim.data.quality import QualityTables

    tables = QualityTables.read(TRACES / "prompts.parquet", TRACES / "quality.parquet")
    test = tables.split(tables.models, "test")
    p = Outcomes.of(test.scores, test.expected).p
    acc = {(m, t): 100 * p[test.rows_of_task(t), j].mean() for j, m in enumerate(test.experts)
           for t in ("mmlu", "gsm8k", "arc_challenge", "humaneval")}
    published = {("mistralai/Mistral-7B-v0.1", "gsm8k"): 36.71, ("mistralai/Mistral-7B-v0.1", "humaneval"): 28.98,
                 ("mistralai/Mistral-7B-v0.1", "mmlu"): 62.14, ("mistralai/Mistral-7B-v0.1", "arc_challenge"): 49.43,
                 ("cognitivecomputations/dolphin-2.9-llama3-8b", "gsm8k"): 69.81}
    for key, value in published.items():
        assert abs(acc[key] - value) < 0.01, (key, acc[key], value)


# --- MixturePolicy.with_subset (the policy is immutable) ------------------------------------------

RNG = np.random.default_rng(0)


def make_policy(k: int = 2, n_prompts: int = 300, n_experts: int = 6) -> MixturePolicy:
    logits = np.random.default_rng(11).normal(size=(n_prompts, n_experts))
    return MixturePolicy(GateRouter(logits), np.ones(n_experts, bool), k, HighestWeight(),
                         Outcomes(np.ones((n_prompts, n_experts))), 0.0, tuple(f"e{i}" for i in range(n_experts)))


def test_with_subset_restricts_decisions_and_leaves_the_original_alone():
    policy = make_policy()
    batch = batch_of(np.arange(300))
    before = policy.decide(batch, RNG)
    assert len(np.unique(before.experts)) == 6  # all experts are used before the change
    new = np.array([False, True, False, False, True, True])
    restricted = policy.with_subset(new)
    after = restricted.decide(batch, RNG)
    assert np.isin(after.experts, [1, 4, 5]).all()
    expected, weights = topk_in_subset(policy.router.logits(batch, RNG), new, 2)
    np.testing.assert_array_equal(after.experts, expected)
    np.testing.assert_allclose(after.weights, weights)
    assert policy.allowed.all() and restricted.subset == ["e1", "e4", "e5"]  # the original is unchanged
    np.testing.assert_array_equal(policy.decide(batch, RNG).experts, before.experts)
    ints = policy.with_subset(np.array([1, 1, 0, 0, 0, 0]))  # integer masks are read as booleans
    assert ints.allowed.dtype == bool
    assert set(np.unique(ints.decide(batch, RNG).experts)) == {0, 1}


def test_with_subset_smaller_than_k_uses_whole_subset():
    """MixturePolicy is documented as top-min(k, |S|) of S (the coarse level may pick fewer than k
    experts): a smaller subset is accepted and every query then goes to all of it."""
    policy = make_policy(k=3).with_subset(np.array([True, False, False, False, False, True]))
    assert policy.k_effective == 2
    decision = policy.decide(batch_of(np.arange(50)), RNG)
    assert decision.experts.shape == (50, 2)
    assert np.all(np.sort(decision.experts, axis=1) == [0, 5])
    np.testing.assert_allclose(decision.weights.sum(axis=1), 1.0)
    assert policy.with_subset(np.ones(6, bool)).decide(batch_of(np.arange(5)), RNG).experts.shape == (5, 3)


def test_with_subset_empty_raises():
    policy = make_policy(k=2).with_subset(np.array([True, True, True, False, False, False]))
    with pytest.raises(ValueError):
        policy.with_subset(np.zeros(6, bool))
    assert np.isin(policy.decide(batch_of(np.arange(10)), RNG).experts, [0, 1, 2]).all()


def test_fixed_router_follows_subset_order():
    order = np.array([2.0, 0.0, 1.0, 3.0])
    policy = MixturePolicy(FixedRouter(order), np.ones(4, bool), 2, HighestWeight(), Outcomes(np.ones((5, 4))), 0.0,
                           ("a", "b", "c", "d"))
    decision = policy.decide(batch_of(np.arange(5)), RNG)
    assert np.all(decision.experts == [1, 2])
    restricted = policy.with_subset(np.array([True, False, False, True]))
    assert np.all(restricted.decide(batch_of(np.arange(5)), RNG).experts == [0, 3])
