"""U(S) with its uncertainty (selection/estimate.py), cross-fitting (routing/crossfit.py) and the default
selection rule near_best (selection/solvers.py)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from moe2sim.routing.aggregation import HighestWeight, Outcomes
from moe2sim.routing.crossfit import CrossFit, assign_folds, cross_fit
from moe2sim.routing.gate import TrainConfig, train_gate
from moe2sim.data.quality import validation_mask
from moe2sim.selection import solvers
from moe2sim.selection.budgets import Budgets
from moe2sim.selection.estimate import UtilityEstimate, prompt_correctness
from moe2sim.selection.problem import SelectionProblem, oracle_coverage

# Five held-out prompts, two categories (mix 1/2, 1/2), two experts; top-1 routing.
P = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], float)       # P(right) per prompt and expert
LOGITS = np.array([[1, 0], [1, 0], [0, 1], [1, 0], [0, 1]], float)  # the gate prefers e0 on rows 0, 1, 3
CATEGORY = np.array([0, 0, 0, 1, 1])


def small_table() -> UtilityEstimate:
    correct = prompt_correctness(LOGITS, HighestWeight(), Outcomes(P), np.arange(5), k=1)
    return UtilityEstimate(correct, CATEGORY, np.array([0.5, 0.5]))


def test_u_and_se_by_hand():
    """a({e0, e1}) = [1, 0, 1, 0, 0]: U = ½·⅔ + ½·0 = ⅓; SE² = ¼·(⅓)/3 + ¼·0/2 = 1/36.
    a({e0}) = [1, 0, 1, 0, 1]: U = ½·⅔ + ½·½; the paired difference [0, 0, 0, 0, −1] has
    SE² = ¼·0/3 + ¼·(½)/2 = 1/16, where the unpaired SEs would add to far more."""
    est = small_table()
    both, e0 = 0b11, 0b01
    np.testing.assert_array_equal(est.a(both), [1, 0, 1, 0, 0])
    assert est(both) == pytest.approx(1 / 3)
    assert est.se(both) == pytest.approx(1 / 6)
    assert est(e0) == pytest.approx(0.5 * 2 / 3 + 0.5 * 0.5)
    assert est.se_difference(both, e0) == pytest.approx(0.25)
    assert est.se_bound(e0) >= max(est.se_difference(m, e0) for m in (0b01, 0b10, 0b11))


def test_cross_fitted_u_by_hand():
    """U(S) from a cross-fit file: the logits are looked up by prompt id and expert name, whatever their order."""
    ids = np.array([f"p{i}" for i in range(5)])
    order = np.array([3, 0, 4, 1, 2])
    fit = CrossFit(ids[order], np.zeros(5, np.int64), ["e1", "e0"], LOGITS[order][:, ::-1], LOGITS[order], 2, 0)
    logits = fit.rows(None, ids, ["e0", "e1"], task_label=False)
    np.testing.assert_array_equal(logits, LOGITS)
    est = UtilityEstimate(prompt_correctness(logits, HighestWeight(), Outcomes(P), np.arange(5), 1), CATEGORY,
                          np.array([0.5, 0.5]))
    assert est(0b11) == pytest.approx(1 / 3) and est.se(0b11) == pytest.approx(1 / 6)


def test_cross_fit_scores_each_prompt_with_a_gate_that_did_not_see_it(tmp_path):
    rng = np.random.default_rng(3)
    n, dim = 120, 8
    x = rng.normal(size=(n, dim)).astype(np.float32)
    tasks = np.array(["a", "b"] * (n // 2))
    u = (rng.random((n, 3)) < np.array([0.3, 0.5, 0.7])).astype(np.float32)
    ids = np.array([f"p{i}" for i in range(n)])
    config = TrainConfig(hidden=8, batch_size=32, max_epochs=3, task_epochs=20)
    fit = cross_fit(x, tasks, u, ids, ["e0", "e1", "e2"], config, folds=3, fold_seed=1)
    np.testing.assert_array_equal(fit.fold, assign_folds(tasks, 3, 1))
    for task in ("a", "b"):  # each task dealt evenly over the folds
        assert np.bincount(fit.fold[tasks == task]).tolist() == [20, 20, 20]
    val = validation_mask(ids)
    for f in range(3):  # fold f's logits: the gate trained without fold f
        rest, out = fit.fold != f, fit.fold == f
        gate = train_gate(x[rest & ~val], tasks[rest & ~val], u[rest & ~val], x[rest & val], tasks[rest & val],
                          u[rest & val], ["e0", "e1", "e2"], "t", config)
        np.testing.assert_allclose(fit.logits[out], gate.logits(x[out]), rtol=1e-5)
        np.testing.assert_allclose(fit.logits_task_label[out], gate.logits(x[out], tasks[out]), rtol=1e-5)
    fit.save(tmp_path / "cf.npz")
    loaded = CrossFit.load(tmp_path / "cf.npz")
    np.testing.assert_array_equal(loaded.logits, fit.logits)
    assert (loaded.folds, loaded.fold_seed, loaded.experts) == (3, 1, ["e0", "e1", "e2"])


# --- near_best: exact against its exhaustive reference --------------------------------------------

def random_problem(rng: np.random.Generator, n: int) -> tuple[SelectionProblem, Budgets]:
    """A real top-k estimate on random prompts (U is not monotone), with binding energy and latency budgets."""
    prompts, m = 200, 3
    skill = rng.uniform(0.2, 0.8, n)
    p = (rng.random((prompts, n)) < skill).astype(float)
    logits = rng.normal(size=(prompts, n)) + p
    category = rng.integers(0, m, prompts)
    k = int(rng.integers(1, 4))
    mix = rng.dirichlet(np.ones(m))
    est = UtilityEstimate(prompt_correctness(logits, HighestWeight(), Outcomes(p), np.arange(prompts), k),
                          category, mix)
    weights = mix[category] / np.bincount(category, minlength=m)[category]
    energy = rng.uniform(50, 500, n)
    delay = rng.uniform(0.5, 3.0, (n, m))
    problem = SelectionProblem([f"e{j}" for j in range(n)], [f"c{c}" for c in range(m)], delay, energy, k, est,
                               oracle_coverage(Outcomes(p), np.arange(prompts), weights / weights.sum()),
                               z=float(rng.choice([0.0, 1.0, 1.96, 3.0])))
    latency = np.quantile(delay, rng.uniform(0.6, 1.0), axis=0)
    return problem, Budgets(float(rng.uniform(0.3, 1.0) * np.sort(energy)[-k:].sum()), latency)


@pytest.mark.parametrize("rule", list(solvers.PREFERENCES))
def test_uncertain_rules_match_their_exhaustive_reference(rule):
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        problem, budgets = random_problem(rng, int(rng.integers(3, 8)))
        try:
            fast = solvers.solve_uncertain(problem, budgets, rule)
        except solvers.InfeasibleBudgets:
            continue
        reference = solvers.solve_uncertain(problem, budgets, rule, exhaustive=True)
        assert fast.mask == reference.mask
        assert problem.feasible(fast.mask, budgets)
        checked += 1
    assert checked >= 40


def test_rules_as_stated():
    """Each rule's choice equals the README's statement, applied by brute force: among the feasible subsets
    S with U(S) − U(single) > z·SE(S − single) and U(best) − U(S) ≤ z·SE(best − S), `significant` takes
    the highest U and `near_best` the least worst-case energy; the best single expert when none qualifies."""
    rng = np.random.default_rng(11)
    seen = {"single": 0, "mixture": 0}
    for _ in range(40):
        problem, budgets = random_problem(rng, int(rng.integers(3, 7)))
        feasible = [m for m in range(1, 1 << problem.n) if problem.feasible(m, budgets)]
        singles = [m for m in feasible if m.bit_count() == 1]
        if not singles:
            continue
        est = problem.utility
        best = max(feasible, key=lambda m: (est(m), -m.bit_count()))
        single = max(singles, key=est)
        qualified = [m for m in feasible if est(m) - est(single) > problem.z * est.se_difference(m, single) + 1e-12
                     and est(best) - est(m) <= problem.z * est.se_difference(best, m) + 1e-12]
        expected = {"significant": max(qualified, key=est, default=single),
                    "near_best": min(qualified, key=problem.energy_of, default=single)}
        for rule, mask in expected.items():
            chosen = solvers.solve_uncertain(problem, budgets, rule).mask
            assert est(chosen) == pytest.approx(est(mask), abs=1e-12)
            if rule == "near_best":
                assert problem.energy_of(chosen) == pytest.approx(problem.energy_of(mask))
        seen["mixture" if qualified else "single"] += 1
    assert min(seen.values()) >= 5  # both outcomes occur, so the check could fail either way


def test_rules_need_standard_errors():
    problem = SelectionProblem(["a"], ["c"], np.zeros((1, 1)), np.ones(1), 1, lambda mask: 0.5, lambda mask: 1.0)
    with pytest.raises(ValueError, match="UtilityEstimate"):
        solvers.solve_uncertain(problem, Budgets(10.0, np.ones(1)), "significant")


# --- declared leaks -------------------------------------------------------------------------------

def write_leaks(path, rows: list[str]):
    from moe2sim.data.leakage import COLUMNS

    path.write_text(",".join(COLUMNS) + "\n" + "".join(r + "\n" for r in rows))
    return path


def test_leak_scales_the_cell_to_its_non_leaked_mean(tmp_path):
    from moe2sim.data.leakage import read_leakage, without_leaks

    leaks = read_leakage(write_leaks(tmp_path / "l.csv", ["m1,t,direct,e,s,0.5,pub", "m0,t,indirect,e,s,,none"]))
    p = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.5], [1.0, 1.0]])
    tasks = np.array(["t", "t", "t", "u"])
    out = without_leaks(p, tasks, ["m0", "m1"], leaks)
    np.testing.assert_allclose(out[:3, 1], p[:3, 1] * 0.5 / (2.5 / 3))  # mean 2.5/3 -> 0.5, ranking kept
    assert out[:3, 1].mean() == pytest.approx(0.5)
    np.testing.assert_array_equal(out[:, 0], p[:, 0])  # declared without a figure: not corrected
    np.testing.assert_array_equal(out[3], p[3])        # other tasks untouched
    up = read_leakage(write_leaks(tmp_path / "u.csv", ["m1,t,direct,e,s,0.99,pub"]))
    np.testing.assert_array_equal(without_leaks(p, tasks, ["m0", "m1"], up), p)  # never corrected upwards


def test_bad_leak_table_names_the_field(tmp_path):
    from moe2sim.data.leakage import read_leakage
    from moe2sim.errors import InputError

    with pytest.raises(InputError, match="non_leaked_accuracy"):
        read_leakage(write_leaks(tmp_path / "l.csv", ["m,t,direct,e,s,high,pub"]))
    (tmp_path / "c.csv").write_text("model,task\nm,t\n")
    with pytest.raises(InputError, match="missing column"):
        read_leakage(tmp_path / "c.csv")


def test_shipped_leaks_lower_metamath_on_gsm8k_train_only():
    """The shipped table corrects MetaMath on GSM8K (published 77.7 %) and touches no other cell."""
    from conftest import PAPER
    from moe2sim.scenario import load_scenario
    from moe2sim.twin.factory import Inputs, outcomes_of, train_outcomes

    inputs = Inputs(load_scenario(PAPER, ["policy.selection.method=none"]))
    measured, corrected = outcomes_of(inputs.train).p, train_outcomes(inputs).p
    gsm8k = inputs.train.tasks == "gsm8k"
    j = list(inputs.train.experts).index("meta-math/MetaMath-Mistral-7B")
    assert measured[gsm8k, j].mean() > 0.8 and corrected[gsm8k, j].mean() == pytest.approx(0.777)
    changed = np.zeros_like(measured, bool)
    changed[gsm8k, j] = True
    np.testing.assert_array_equal(corrected[~changed], measured[~changed])


@pytest.mark.parametrize("override, field", [("policy.cross_fit=missing.npz", "cross-fitted logits not found"),
                                             ("traces.leakage=missing.csv", "leakage table not found")])
def test_missing_selection_inputs_are_one_line_errors(capsys, override, field):
    from conftest import PAPER
    from moe2sim.cli import main

    code = main(["select", str(PAPER), "--set", override])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert field in err and "missing" in err and len(err.strip().splitlines()) == 1
