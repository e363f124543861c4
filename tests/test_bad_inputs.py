"""Property-based: nothing a user types crashes, hangs or writes invalid output.

Generated mutations of a valid scenario (keys deleted, altered, retyped; extreme, non-finite, negative,
huge values; wrong types; unicode; bad paths), raw scenario bytes, device profiles, replayed arrival
files, outcome JSON files and CLI flags (tests/bad_inputs.py, registry CASES). Each case runs the real
CLI and must end in exit 2 with one line naming the file or flag, or exit 0 with valid outputs: never a
traceback, never a hang. Derandomized (the same inputs every run, ~2-3 min); `python
benchmarks/bench_bad_inputs.py` runs a bigger sample and counts the outcomes.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from bad_inputs import CASES, base_scenario, dump, scenario_case

SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", list(CASES))
def test_generated_inputs_end_cleanly(name):
    case = CASES[name]

    @settings(max_examples=case.ci_examples, **SETTINGS)
    @given(case.strategy)
    def check(value):
        outcome = case.run(value)
        assert outcome.kind in ("exit0", "exit2"), str(outcome)

    check()


def test_the_unmutated_scenario_runs():
    """The base the mutations start from is valid and runs: a mutation is what makes a case bad."""
    assert scenario_case(dump(base_scenario()), runnable=True).kind == "exit0"
