"""The simulator's gate routes from the prompt alone unless the scenario asks for the task label."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import PAPER
from moe2sim.data.embeddings import load_embeddings
from moe2sim.scenario import load_scenario
from moe2sim.twin.factory import Inputs, build_router


@pytest.mark.parametrize("task_label", [False, True])
def test_gate_router_reads_the_label_only_when_asked(task_label):
    scenario = load_scenario(PAPER, [f"policy.task_label={str(task_label).lower()}",
                                     "policy.selection.method=none"])
    inputs = Inputs(scenario)
    test = inputs.test
    routed = build_router(inputs, test).prompt_logits
    gate = inputs.gate
    x = load_embeddings(scenario.path(scenario.traces.embeddings), test.prompt_ids, gate.dim)
    columns = [gate.experts.index(m) for m in test.experts]
    label_free, label_aware = gate.logits(x)[:, columns], gate.logits(x, test.tasks)[:, columns]
    assert not np.allclose(label_free, label_aware)  # the two differ on this data, so the check can fail
    np.testing.assert_array_equal(routed, label_aware if task_label else label_free)
