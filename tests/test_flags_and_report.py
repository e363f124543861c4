"""Flags name themselves in errors; every flag's help states its default; sweeps with one axis, or with
points no subset meets, run and draw them; the report says what was run."""
from __future__ import annotations

import argparse
import re

import pytest

from moe2sim.cli import main
from moe2sim.cli.main import build_parser
from moe2sim.envs import BudgetEnv


def call(capsys, args: list[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,flag", [
    (["select", "quickstart", "--energy-budget", "-1"], "--energy-budget"),
    (["select", "quickstart", "--energy-budget", "-1e3"], "--energy-budget"),
    (["select", "quickstart", "--energy-budget", "nan"], "--energy-budget"),
    (["select", "quickstart", "--energy-budget", "1"], "--energy-budget"),       # no subset meets 1 J
    (["select", "quickstart", "--latency-budget", "mmlu=abc"], "--latency-budget"),
    (["select", "quickstart", "--latency-budget", "nope=3"], "--latency-budget"),
    (["select", "quickstart", "--method", "foo"], "--method"),
    (["sweep", "quickstart", "--energy-budgets", "-200,400"], "--energy-budgets"),
    (["sweep", "quickstart", "--latency-scales", "1,x"], "--latency-scales"),
    (["sweep", "quickstart", "--methods", "moe2,foo"], "--methods"),
    (["sweep", "quickstart", "--jobs", "-1"], "--jobs"),
    (["eval-gate", "--options", "mmlu=abc"], "--options"),
    (["eval-gate", "--options", "mmlu=1"], "--options"),
    (["rollout", "budget_env", "--windows", "0"], "--windows"),
    (["run", "quickstart", "--seed", "-1"], "--seed"),
    (["run", "quickstart", "--replications", "1000000000"], "--replications"),
    (["run", "quickstart", "--backend", "ray", "--address", "nonsense:1"], "--address"),  # was: retried for ever
    (["sweep", "quickstart", "--energy-budgets", "400", "--backend", "ray", "--address", "127.0.0.1:1"], "--address"),   # was: grows until the OOM killer
    (["run", "paper", "--set", "sweep.methods=[]"], "sweep.methods"),             # was: KeyError 'axis'
    (["run", "paper", "--set", "sweep.energy_budget_J=[]", "--set", "sweep.latency_scale=[]"], "sweep"),
    (["run", "quickstart", "--set", "policy.k=["], "--set"),
    (["train-gate", "--epochs", "0"], "--epochs"),
    (["train-gate", "--hidden", "-4"], "--hidden"),
    (["train-gate", "--out", "/tmp/" + "g" * 300], "--out"),
    (["run", "quickstart", "--out", "runs/nul\0byte"], "--out"),
    (["validate", "quickstart", "--out", "runs/" + "r" * 300], "--out"),
])
def test_a_bad_flag_is_one_line_naming_it(capsys, args, flag):
    code, _, err = call(capsys, args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moe2sim: error: ") and flag in lines[0], err
    assert "scenarios/quickstart.yaml" not in lines[0] and "further information" not in lines[0]


def test_rollout_of_a_scenario_without_an_env_block_is_refused(capsys):
    """Was: exit 0, `queries: 2000` ignored and a 288-window day simulated."""
    code, _, err = call(capsys, ["rollout", "quickstart", "--out", "/tmp/never-written"])
    assert code == 2 and err.count("\n") == 1 and "quickstart.yaml: env:" in err


def test_every_flag_states_its_default():
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in subs.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                text = formatter._get_help_string(action)
                assert action.required or "default" in text, (name, action.option_strings, text)
        assert "(default: None)" not in sub.format_help(), name


def test_sweep_with_one_axis_and_infeasible_points_runs_and_marks_them(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, stdout, err = call(capsys, ["sweep", "quickstart", "--energy-budgets", "100,400", "--methods",
                                      "moe2,best_single", "--set", "queries=60", "--jobs", "1", "--out", str(out),
                                      "--quiet"])
    assert code == 0, err
    html = (out / "report.html").read_text()
    alts = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    # test accuracy, subsets, simulated energy, simulated accuracy (its 95 % band needs replications):
    # no latency figures for an energy-only sweep
    assert len(alts) == 4 and all(alts)
    assert "no subset meets the budgets" in html and "below every expert" in html  # 100 J: listed, drawn as ×
    assert "selection method" in html and "energy budget (J per query)" in html


def test_a_scenario_with_only_energy_in_its_sweep_block_runs(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = call(capsys, ["run", "quickstart", "--set", "queries=60", "--set", "sweep={energy_budget_J: [400],"
                                 " methods: [moe2], simulate: false}", "--out", str(out), "--quiet"])
    assert code == 0, err
    html = (out / "report.html").read_text()
    for label in ("policy (router)", "k (experts per query)", "aggregation", "selection method", "subset S used",
                  "latency budget: mmlu (s)", "latency violations", "energy violations"):
        assert label in html, label
    assert html.count("<img alt=") == 4 + 2  # the run's four figures, the sweep's accuracy and subsets


@pytest.mark.parametrize("kwargs,name", [(dict(windows=0), "windows"), (dict(window_s=float("nan")), "window_s"),
                                         (dict(action="continuous"), "action"), (dict(scenario=3), "scenario"),
                                         (dict(overrides="policy.k=1"), "overrides"),
                                         (dict(windows=10**9), "windows")])
def test_env_constructor_errors_name_the_argument(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        BudgetEnv(**kwargs)


def test_env_reset_refuses_options_and_bad_seeds():
    env = BudgetEnv(windows=1)
    with pytest.raises(ValueError, match="option"):
        env.reset(options={"budget": 1})
    with pytest.raises(TypeError, match="seed"):
        env.reset(seed=-1)
    env.reset(seed=0)


@pytest.mark.parametrize("delay_s", [3.0, 8.0])
def test_ctrl_c_during_replications_exits_130_without_traceback_or_workers(tmp_path, delay_s):
    """SIGINT to the process group while replications run in the worker pool. Was: a traceback
    (AttributeError in the pool's clean-up), exit 1, and a worker still alive after exit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    # 6 replications of 30 simulated days each: minutes of work on any machine, so the interrupt lands mid-run
    proc = subprocess.Popen([sys.executable, "-m", "moe2sim", "run", "paper", "--replications", "6", "--jobs", "2",
                             "--set", "duration_s=2592000", "--set", "sweep.simulate=false", "--out",
                             str(tmp_path / "out"), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    time.sleep(delay_s)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    for _ in range(20):  # the pool's workers and resource tracker are gone within seconds
        alive = subprocess.run(["pgrep", "-a", "-g", str(proc.pid)], capture_output=True, text=True).stdout.strip()
        if not alive:
            break
        time.sleep(0.5)
    assert not alive, f"processes of the run still alive: {alive}"
    assert not (tmp_path / "out" / "summary.json").exists()


def test_run_of_a_randomized_site_is_refused_naming_it(capsys):
    """Was: `moe2sim run` simulated the nominal site of a site.random scenario, silently."""
    code, _, err = call(capsys, ["run", "suite_outage_random", "--out", "/tmp/never-written-random"])
    assert code == 2 and err.count("\n") == 1 and "site.random" in err
