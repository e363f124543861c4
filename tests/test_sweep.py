"""Budget sweeps: no state carried between sweeps of different scenarios in one process."""
from __future__ import annotations

from conftest import PAPER, QUICKSTART
from moe2sim.experiments.sweep import run_sweep
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin


def sweep_of(path, energy: float) -> load_scenario:
    return load_scenario(path, [f"sweep={{energy_budget_J: [{energy}], methods: [moe2], simulate: false}}"])


def test_a_second_sweep_in_one_process_uses_its_own_scenario():
    """On main at cd65cb7 twins were cached by method name only: paper's sweep after quickstart's, in one
    process, returned quickstart's subset mistral-7b|metamath-7b|llama3-8b."""
    quick = run_sweep(sweep_of(QUICKSTART, 900), jobs=1, progress=False)
    paper_scenario = sweep_of(PAPER, 900)
    paper = run_sweep(paper_scenario, jobs=1, progress=False)
    expected = Twin.build(paper_scenario).policy.subset
    assert paper["subset"].iloc[0] == "|".join(expected)
    assert paper["subset"].iloc[0] != quick["subset"].iloc[0]
    assert set(paper["subset"].iloc[0].split("|")) <= {e.name for e in paper_scenario.experts}


# --- replications, journal and backends (issue 16) ---------------------------------------------------------

import json  # noqa: E402
import sys  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from moe2sim.cli import main  # noqa: E402
from moe2sim.experiments import sweep as sweep_module  # noqa: E402
from moe2sim.experiments.sweep import JOURNAL  # noqa: E402
from moe2sim.experiments.replications import replicate  # noqa: E402
from moe2sim.report.outputs import OutputDir  # noqa: E402
from moe2sim.experiments.sweep import sweep_rows, sweep_to  # noqa: E402
from moe2sim.report.sweep_table import paired, table  # noqa: E402

TINY = ["queries=60", "outputs.report=false",
        "sweep={energy_budget_J: [300, 900], latency_scale: [1.0], methods: [moe2, best_single], simulate: true}"]


def tiny() -> load_scenario:
    return load_scenario(QUICKSTART, TINY)


def test_replicated_sweep_table_and_paired_differences():
    rows = sweep_rows(tiny(), replications=3, jobs=1, progress=False)
    assert len(rows) == 3 * 2 * 3 and set(rows["seed"]) == {0, 1, 2}
    df = table(rows)
    assert len(df) == 6 and (df["replications"] == 3).all()
    assert (df["sim_accuracy_low"] <= df["sim_accuracy"]).all() and (df["sim_accuracy"] <= df["sim_accuracy_high"]).all()
    diffs = paired(rows)
    d = diffs[(diffs["axis"] == "energy") & (diffs["value"] == 300) & (diffs["metric"] == "sim_accuracy")].iloc[0]
    per_seed = [rows[(rows["axis"] == "energy") & (rows["value"] == 300) & (rows["method"] == m)]
                .set_index("seed")["sim_accuracy"] for m in ("moe2", "best_single")]
    assert d["baseline"] == "best_single" and d["n"] == 3
    assert d["diff_mean"] == pytest.approx((per_seed[0] - per_seed[1]).mean())
    # common random numbers: a seed gives every method the same arrivals and prompts, so where a baseline picks
    # MoE²'s subset its simulated runs are MoE²'s, seed by seed: the difference is exactly 0
    same = df[df["method"] == "moe2"].merge(df[df["method"] == "best_single"], on=["axis", "value"])
    same = same[same["subset_x"] == same["subset_y"]]
    assert len(same), "the tiny sweep should have a budget where best_single picks MoE²'s subset"
    zero = diffs.merge(same[["axis", "value"]])
    assert len(zero) and (zero[["diff_mean", "low", "high"]] == 0).all().all()


def test_a_restarted_sweep_recomputes_only_what_the_journal_lacks(tmp_path, monkeypatch):
    out = OutputDir(tmp_path / "sweep")
    first, _ = sweep_to(tiny(), out, jobs=1, progress=False, replications=2)
    lines = (out.path / JOURNAL).read_text().splitlines()
    assert json.loads(lines[0])["journal"] == "moe2sim sweep" and len(lines) == 1 + 12
    dropped = [json.loads(lines[i])["record"] for i in (2, 7, 11)]
    (out.path / JOURNAL).write_text("\n".join(l for i, l in enumerate(lines) if i not in (2, 7, 11)) + "\n")
    calls = []
    real = sweep_module.evaluate
    monkeypatch.setattr(sweep_module, "evaluate", lambda s, t, p, sim, seed: calls.append((p, seed)) or real(s, t, p, sim, seed))
    again, _ = sweep_to(tiny(), out, jobs=1, progress=False, replications=2)
    assert sorted((p.axis, p.value, p.method, seed) for p, seed in calls) == sorted(
        (r["axis"], r["value"], r["method"], r["seed"]) for r in dropped)
    pd.testing.assert_frame_equal(first, again)
    assert JOURNAL in json.loads((out.path / ".moe2sim-manifest.json").read_text())["files"]
    # a third run has nothing left to do; more replications add only the new seeds
    calls.clear()
    sweep_to(tiny(), out, jobs=1, progress=False, replications=2)
    assert calls == []
    sweep_to(tiny(), out, jobs=1, progress=False, replications=3)
    assert {seed for _, seed in calls} == {2} and len(calls) == 6


def test_a_changed_scenario_starts_the_journal_afresh(tmp_path):
    out = OutputDir(tmp_path / "sweep")
    sweep_to(tiny(), out, jobs=1, progress=False)
    changed = load_scenario(QUICKSTART, [*TINY, "queries=70"])
    df, _ = sweep_to(changed, out, jobs=1, progress=False)
    lines = (out.path / JOURNAL).read_text().splitlines()
    assert len(lines) == 1 + 6 and all(json.loads(l)["record"]["seed"] == 0 for l in lines[1:])
    assert len(df) == 6


def test_ray_backend_gives_the_local_backend_table():
    ray = pytest.importorskip("ray")
    local = sweep_rows(tiny(), replications=2, jobs=1, progress=False)
    twin = Twin.build(tiny())
    here = replicate(twin, 3, jobs=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = sweep_rows(tiny(), replications=2, jobs=2, progress=False, executor_name="ray")
        there = replicate(twin, 3, executor_name="ray", jobs=2)
    finally:
        ray.shutdown()
    assert here[0] == there[0]
    pd.testing.assert_frame_equal(here[3], there[3])
    pd.testing.assert_frame_equal(local, remote)
    pd.testing.assert_frame_equal(table(local), table(remote))
    pd.testing.assert_frame_equal(paired(local), paired(remote))


def test_ray_backend_without_ray_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    rc = main(["sweep", str(QUICKSTART), "--backend", "ray", "--energy-budgets", "300", "--out", str(tmp_path / "s"),
               "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install 'moe2sim[ray]'" in err[0]
    assert not (tmp_path / "s").exists()


def test_address_needs_the_ray_backend(tmp_path, capsys):
    rc = main(["sweep", str(QUICKSTART), "--address", "auto", "--energy-budgets", "300", "--out", str(tmp_path / "s")])
    assert rc == 2 and "--address" in capsys.readouterr().err


def test_a_ray_actor_builds_each_group_state_once():
    """GroupWorker is the actor's body: the context it was given, one prepare per group, whatever the calls."""
    from moe2sim.experiments.executors import GroupWorker, LocalExecutor, WorkSpec

    built = []
    job = WorkSpec(10, lambda ctx, group: built.append(group) or f"{group}@{ctx}",
              lambda ctx, state, items: [f"{state}:{i}" for i in items])
    worker = GroupWorker(job.context, job.prepare, job.work)
    assert worker.run(("a", [1, 2])) == ["a@10:1", "a@10:2"]
    assert worker.run(("b", [3])) == ["b@10:3"] and worker.run(("a", [4])) == ["a@10:4"]
    assert built == ["a", "b"]
    built.clear()
    with LocalExecutor(jobs=1) as local:  # in process: the same once-per-group rule
        assert list(local.run(job, [("a", [1]), ("a", [2]), ("b", [3])])) == [["a@10:1"], ["a@10:2"], ["b@10:3"]]
    assert built == ["a", "b"]
