"""One records schema: the simulator, the environment and `hardware live` write the same columns,
through moe2sim.sim.records."""
from __future__ import annotations

import numpy as np

from conftest import QUICKSTART
from moe2sim.hardware.backends import Generation
from moe2sim.hardware.live import Attempt, LegResult, records_of
from moe2sim.scenario import load_scenario
from moe2sim.sim.records import LEG_COLUMNS, QUERY_COLUMNS
from moe2sim.twin import Twin


def test_live_and_simulated_records_have_the_same_schema():
    twin = Twin.build(load_scenario(QUICKSTART, ["queries=20"]))
    _, queries, legs = twin.simulate()
    assert list(queries.columns) == list(QUERY_COLUMNS) and list(legs.columns) == list(LEG_COLUMNS)
    batch = next(twin.workload.batches(np.random.default_rng(0))).take(slice(0, 1))
    decision = twin.policy.decide(batch, np.random.default_rng(0))
    ok = LegResult(Generation("x", 10, 5, 0.2, 0.5, {"queue_s": 0.1, "energy_J": 3.0}), 1.0, 1.9, 1, "",
                   [Attempt(1, 1.0, 1.9, "")])
    failed = LegResult(None, 1.0, 4.0, 3, "refused", [Attempt(a, 1.0, 4.0, "refused") for a in (1, 2, 3)])
    query, leg_rows = records_of(twin, twin.policy, 7, batch, decision, np.array([[True, True]]), [ok, failed])
    assert list(query) == list(QUERY_COLUMNS)
    assert all(list(r) == list(LEG_COLUMNS) for r in leg_rows)
    # the failed leg is counted and named; the query waits for it to give up; energy of the failed leg unknown
    assert query["failed_legs"] == 1 and "refused" in query["error"] and leg_rows[1]["attempts"] == 3
    assert query["finish_s"] == 4.0 + twin.policy.aggregation_s and np.isnan(query["energy_J"])
    assert leg_rows[0]["queue_s"] == 0.1 and abs(leg_rows[0]["start_s"] - 1.1) < 1e-12
