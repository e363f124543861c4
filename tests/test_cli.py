"""The `moe2sim` command: bad input is one line naming file and field with exit code 2 and no
partial output; `run` writes the documented files reproducibly; `validate` checks without running."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from conftest import QUICKSTART, ROOT, TRACES, quickstart_raw
from moe2sim.cli import main


def run_cli(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moe2sim", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def call(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# --- bad input -------------------------------------------------------------------------------
# Each case builds a bad scenario and returns (scenario path, strings stderr must contain).
Case = Callable[[Path, Callable[..., Path]], tuple[Path, list[str]]]


def malformed_yaml(tmp: Path, write) -> tuple[Path, list[str]]:
    path = tmp / "bad.yaml"
    path.write_text("name: x\nexperts: [{name: a, model: b\ncategories: []\n")
    return path, [str(path), "malformed YAML", "line "]


def unknown_key(tmp: Path, write):
    raw = quickstart_raw()
    raw["policy"]["kk"] = 2
    path = write(base=raw)
    return path, [str(path), "policy.kk", "unknown key"]


def missing_scenario(tmp: Path, write):
    path = tmp / "does-not-exist.yaml"
    return path, [str(path), "not found"]


def missing_trace(tmp: Path, write):
    raw = quickstart_raw()
    raw["traces"] = {"quality": "nonexistent.parquet"}
    return write(base=raw), [str(TRACES / "nonexistent.parquet"), "not found"]


def csv_missing_column(tmp: Path, write):
    prompts = tmp / "prompts.csv"
    pd.DataFrame({"prompt_id": ["mmlu/test/0000"], "task": ["mmlu"], "prompt_tokens": [10],
                  "prompt_bytes": [40]}).to_csv(prompts, index=False)  # no `split`
    raw = quickstart_raw()
    raw["traces"] = {"prompts": str(prompts)}
    return write(base=raw), [str(prompts), "split", "missing column"]


def garbage_parquet(tmp: Path, write):
    bad = tmp / "quality.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file at all" * 10)
    raw = quickstart_raw()
    raw["traces"] = {"quality": str(bad)}
    return write(base=raw), [str(bad), "cannot read"]


def unknown_model(tmp: Path, write):
    raw = quickstart_raw()
    raw["experts"][2]["model"] = "acme/NoSuchModel-9B"
    return write(base=raw), [str(TRACES / "quality.parquet"), "expert", "acme/NoSuchModel-9B"]


def unknown_profile(tmp: Path, write):
    raw = quickstart_raw()
    raw["experts"][1]["profile"] = "abacus-9000"
    path = write(base=raw)
    return path, [str(path), "experts.1.profile", "abacus-9000"]


def zero_rate(tmp: Path, write):
    raw = quickstart_raw()
    raw["arrivals"]["rate_per_s"] = 0
    path = write(base=raw)
    return path, [str(path), "rate_per_s"]


def negative_rate(tmp: Path, write):
    raw = quickstart_raw()
    raw["arrivals"]["rate_per_s"] = -0.3
    path = write(base=raw)
    return path, [str(path), "rate_per_s"]


def k_too_large(tmp: Path, write):
    raw = quickstart_raw()
    raw["policy"]["k"] = 4
    path = write(base=raw)
    return path, [str(path), "policy.k"]


def bad_replay_file(tmp: Path, write):
    arrivals = tmp / "arrivals.csv"
    arrivals.write_text("time_s,category\n0.0,mmlu\n5.0,gsm8k\n2.0,mmlu\n")
    raw = quickstart_raw()
    raw["arrivals"] = {"process": "replay", "file": str(arrivals)}
    return write(base=raw), [str(arrivals), "time_s"]


BAD_INPUTS: list[Case] = [malformed_yaml, unknown_key, missing_scenario, missing_trace, csv_missing_column,
                          garbage_parquet, unknown_model, unknown_profile, zero_rate, negative_rate,
                          k_too_large, bad_replay_file]


def assert_clean_failure(code: int, out: str, err: str, expected: list[str]) -> None:
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert "Traceback" not in out + err
    assert err.startswith("moe2sim: error: ")
    assert len(err.strip().splitlines()) == 1, err
    for s in expected:
        assert s in err, f"stderr does not name {s!r}: {err}"


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.__name__ for c in BAD_INPUTS])
def test_run_bad_input_in_process(case: Case, tmp_path, write_scenario, capsys):
    tmp = tmp_path.resolve()
    scenario, expected = case(tmp, write_scenario)
    out_dir = tmp / "out"
    code, out, err = call(capsys, ["run", str(scenario), "--out", str(out_dir), "--quiet"])
    assert_clean_failure(code, out, err, expected)
    assert not (out_dir / "summary.json").exists()
    assert not any(p.name.startswith(".out.partial") for p in tmp.iterdir()), "staging folder left behind"


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.__name__ for c in BAD_INPUTS])
def test_validate_bad_input(case: Case, tmp_path, write_scenario, capsys):
    """`validate` checks "a scenario and the files it names, without running": every bad input
    that `run` rejects must already be rejected here (including the arrival replay file)."""
    scenario, expected = case(tmp_path.resolve(), write_scenario)
    code, out, err = call(capsys, ["validate", str(scenario)])
    assert "ok" not in out
    assert_clean_failure(code, out, err, expected)


SUBPROCESS_CASES = [malformed_yaml, garbage_parquet]  # the rest in process (each start imports torch)


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.__name__ for c in SUBPROCESS_CASES])
def test_run_bad_input_subprocess(case: Case, tmp_path, write_scenario):
    tmp = tmp_path.resolve()
    scenario, expected = case(tmp, write_scenario)
    out_dir = tmp / "out"
    proc = run_cli(["run", str(scenario), "--out", str(out_dir), "--quiet"])
    assert_clean_failure(proc.returncode, proc.stdout, proc.stderr, expected)
    assert not (out_dir / "summary.json").exists()


def test_bad_set_expression(capsys, tmp_path):
    code, out, err = call(capsys, ["validate", str(QUICKSTART), "--set", "categories.poetry.mix=1"])
    assert_clean_failure(code, out, err, ["--set", "poetry"])


# --- happy path ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quickstart_runs(tmp_path_factory) -> dict[str, Path]:
    """quickstart run three times: seed 3 (via the real command line), seed 3 again, seed 4."""
    base = tmp_path_factory.mktemp("runs")
    dirs = {"a": base / "a", "b": base / "b", "c": base / "c"}
    proc = run_cli(["run", "scenarios/quickstart.yaml", "--out", str(dirs["a"]), "--seed", "3", "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert main(["run", str(QUICKSTART), "--out", str(dirs["b"]), "--seed", "3", "--quiet"]) == 0
    assert main(["run", str(QUICKSTART), "--out", str(dirs["c"]), "--seed", "4", "--quiet"]) == 0
    return dirs


def test_run_writes_outputs(quickstart_runs):
    out = quickstart_runs["a"]
    assert {p.name for p in out.iterdir()} == {"queries.parquet", "legs.parquet", "summary.json", "report.html",
                                               ".moe2sim-manifest.json"}
    queries = pd.read_parquet(out / "queries.parquet")
    legs = pd.read_parquet(out / "legs.parquet")
    assert len(queries) == 2000 and len(legs) == 4000
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 3 and s["scenario"] == "quickstart"
    for key in ("queries", "accuracy", "latency_s", "energy_J_per_query", "energy_J_total",
                "budget_violations", "categories"):
        assert key in s, key
    assert set(s["latency_s"]) >= {"mean", "p50", "p95", "p99"}
    assert s["latency_s"]["p50"] <= s["latency_s"]["p95"] <= s["latency_s"]["p99"]
    assert s["queries"] == 2000
    assert s["accuracy"] == pytest.approx(queries["correct"].mean())
    assert s["latency_s"]["mean"] == pytest.approx(queries["latency_s"].mean())
    assert s["energy_J_per_query"] == pytest.approx(queries["energy_J"].mean())
    assert set(s["categories"]) == {"mmlu", "gsm8k", "arc_challenge", "humaneval"}
    for name, block in s["categories"].items():
        g = queries[queries["category"] == name]
        assert block["queries"] == len(g)
        assert block["accuracy"] == pytest.approx(g["correct"].mean())
        assert set(block["latency_s"]) >= {"mean", "p50", "p95", "p99"}
        assert "energy_J_per_query" in block and "budget_violations" in block
    assert sum(b["queries"] for b in s["categories"].values()) == 2000
    assert s["budget_violations"]["latency"] == int(queries["latency_violation"].sum())


def test_report_has_four_png_images(quickstart_runs):
    html = (quickstart_runs["a"] / "report.html").read_text()
    marker = 'src="data:image/png;base64,'
    assert html.count(marker) == 4
    for chunk in html.split(marker)[1:]:
        png = base64.b64decode(chunk.split('"', 1)[0])
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_same_seed_same_summary(quickstart_runs):
    a = (quickstart_runs["a"] / "summary.json").read_text()
    b = (quickstart_runs["b"] / "summary.json").read_text()
    assert a == b
    pd.testing.assert_frame_equal(pd.read_parquet(quickstart_runs["a"] / "queries.parquet"),
                                  pd.read_parquet(quickstart_runs["b"] / "queries.parquet"))


def test_different_seed_different_summary(quickstart_runs):
    a = json.loads((quickstart_runs["a"] / "summary.json").read_text())
    c = json.loads((quickstart_runs["c"] / "summary.json").read_text())
    assert c["seed"] == 4
    assert a["latency_s"] != c["latency_s"]
    assert a["energy_J_total"] != c["energy_J_total"]


def test_run_replaces_its_own_results_and_keeps_the_users(tmp_path, capsys):
    """A re-run replaces what moe2sim wrote before (its manifest says which files) and never deletes or
    overwrites anything else; a folder moe2sim did not write is refused unless --allow-existing."""
    out = tmp_path / "out"
    args = ["run", str(QUICKSTART), "--out", str(out), "--seed", "1", "--quiet", "--set", "queries=300"]
    assert call(capsys, [*args, "--set", "outputs.format=csv"])[0] == 0
    (out / "notes.txt").write_text("mine")          # the user adds a file beside the results
    code, stdout, _ = call(capsys, args)
    assert code == 0 and str(out) in stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["queries"] == 300
    assert not (out / "queries.csv").exists(), "stale result of an earlier run left in place"
    assert len(pd.read_parquet(out / "legs.parquet")) == 600
    assert (out / "notes.txt").read_text() == "mine"
    assert not any(".partial" in p.name for p in tmp_path.iterdir())

    user = tmp_path / "user"
    user.mkdir()
    for name in ("report.md", "legs.xlsx", "summary.json"):
        (user / name).write_text("keep")
    code, stdout, err = call(capsys, ["run", str(QUICKSTART), "--out", str(user), "--quiet", "--set", "queries=50"])
    assert code == 2 and "--out" in err and "did not write" in err and "Traceback" not in err
    code, _, err = call(capsys, ["run", str(QUICKSTART), "--out", str(user), "--quiet", "--set", "queries=50",
                                 "--allow-existing"])
    assert code == 2 and "summary.json" in err and "will not be overwritten" in err  # a user's file of our name
    (user / "summary.json").unlink()
    code, _, _ = call(capsys, ["run", str(QUICKSTART), "--out", str(user), "--quiet", "--set", "queries=50",
                               "--allow-existing"])
    assert code == 0 and json.loads((user / "summary.json").read_text())["queries"] == 50
    assert all((user / n).read_text() == "keep" for n in ("report.md", "legs.xlsx"))


def test_run_csv_format_and_no_report(tmp_path, capsys, write_scenario):
    raw = quickstart_raw()
    raw["queries"] = 200
    raw["outputs"] = {"format": "csv", "report": False}
    out = tmp_path / "out"
    code, _, _ = call(capsys, ["run", str(write_scenario(base=raw)), "--out", str(out), "--quiet"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"queries.csv", "legs.csv", "summary.json", ".moe2sim-manifest.json"}
    assert len(pd.read_csv(out / "queries.csv")) == 200


def test_run_set_override_takes_effect(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = call(capsys, ["run", str(QUICKSTART), "--out", str(out), "--quiet", "--set", "queries=250",
                               "--set", "categories.gsm8k.latency_budget_s=0.001"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["queries"] == 250
    gsm = s["categories"]["gsm8k"]
    assert gsm["budget_violations"]["latency"] == gsm["queries"]  # every gsm8k query misses 1 ms


def test_validate_ok_subprocess():
    proc = run_cli(["validate", "scenarios/quickstart.yaml"])
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "quickstart.yaml" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("name", ["quickstart", "paper"])
def test_validate_ok_in_process(capsys, name):
    code, out, err = call(capsys, ["validate", str(ROOT / "scenarios" / f"{name}.yaml")])
    assert code == 0 and ": ok (" in out and err == ""


def test_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
