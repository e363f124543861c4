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
