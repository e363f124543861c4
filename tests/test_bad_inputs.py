"""Property-based: nothing a user types crashes, hangs or writes invalid output.

Generated mutations of a valid scenario (keys deleted, altered, retyped; extreme, non-finite, negative,
huge values; wrong types; unicode; bad paths), raw scenario bytes, device profiles, replayed arrival
files, outcome JSON files and CLI flags. Each case runs the real CLI (tests/bad_inputs.py) and must end
in exit 2 with one line naming the file or flag, or exit 0 with valid outputs — never a traceback, never
a hang. Derandomized (the same inputs every run); `python benchmarks/bench_bad_inputs.py` runs a bigger
sample and counts the outcomes.
"""
from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_inputs import (base_scenario, cli_args, dump, flags_case, mutated, outcome_content, outcome_file_case,
                        profile_case, replay_case, scenario_case, small)
from conftest import TRACES

SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def assert_clean(outcome) -> None:
    assert outcome.kind in ("exit0", "exit2"), str(outcome)


@settings(max_examples=30, **SETTINGS)
@given(mutated(base_scenario()))
def test_mutated_scenarios(case):
    tree, _ = case
    assert_clean(scenario_case(dump(tree), runnable=small(tree)))


@settings(max_examples=15, **SETTINGS)
@given(st.one_of(st.binary(max_size=60), st.text(max_size=60),
                 st.sampled_from([b"\xff\xfe name: x", b"a: &a [*a]", b"[" * 5000, b"name: [", b"- 1\n- 2",
                                  b"name: x\nname: y", b"!!python/object:os.system {}"])))
def test_raw_scenario_bytes(content):
    assert_clean(scenario_case(content, runnable=False))


def profile_base() -> dict:
    return yaml.safe_load((TRACES / "profiles" / "rtx4090-8b-q4.yaml").read_text())


@settings(max_examples=15, **SETTINGS)
@given(mutated(profile_base(), max_mutations=2))
def test_mutated_profiles(case):
    tree, _ = case
    assert_clean(profile_case(tree))


csv_cells = st.one_of(st.sampled_from(["0", "1", "2.5", "-1", "inf", "nan", "1e300", "", "abc", "mmlu", "nope",
                                       "1e12", "3"]), st.text(alphabet="0123456789.-e,\"", max_size=5))


@settings(max_examples=15, **SETTINGS)
@given(st.sampled_from(["time_s", "time_s,category", "category", "time", ""]),
       st.lists(st.tuples(csv_cells, st.sampled_from(["mmlu", "gsm8k", "nope", "", "1"])), max_size=5),
       st.sampled_from([1.0, 1e-9, 1e12, 0.5]))
def test_replay_files(header, rows, time_scale):
    two = "," in header
    body = "".join(f"{t},{c}\n" if two else f"{t}\n" for t, c in rows)
    assert_clean(replay_case(f"{header}\n{body}", time_scale))


@settings(max_examples=60, **SETTINGS)
@given(outcome_content)
def test_outcome_files(content):
    assert_clean(outcome_file_case(content))


@settings(max_examples=30, **SETTINGS)
@given(cli_args())
def test_cli_flags(args):
    assert_clean(flags_case(args))


@pytest.mark.parametrize("tree", [base_scenario()])
def test_the_unmutated_scenario_runs(tree):
    """The base the mutations start from is valid and runs: a mutation is what makes a case bad."""
    assert scenario_case(dump(tree), runnable=True).kind == "exit0"

