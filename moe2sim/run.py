"""`moe2sim run`: simulate a scenario and write queries, legs, summary.json and report.html.

Outputs are written into a hidden staging folder next to DIR and moved in only when all of
them exist, so a failed run never leaves a result that looks complete.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from moe2sim.metrics import summarize
from moe2sim.report import sweep_section, write_report
from moe2sim.scenario import Scenario
from moe2sim.sweep import run_sweep
from moe2sim.twin import Twin

def write_table(df, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        df.to_parquet(path.with_suffix(".parquet"), index=False)
    else:
        df.to_csv(path.with_suffix(".csv"), index=False)


def run_scenario(scenario: Scenario, out: Path, seed: int | None = None, progress: bool = True) -> dict[str, Any]:
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    twin = Twin.build(scenario)
    result, queries, legs = twin.simulate(progress=progress)
    summary = summarize(queries, legs, {e.name: e.idle_power_W for e in twin.experts},
                        {e.name: e.slots for e in twin.experts}, max(result.run_s, float(queries["finish_s"].max())))
    summary = {"scenario": scenario.name, "seed": scenario.seed, **summary}
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write_table(queries, stage / "queries", scenario.outputs.format)
        write_table(legs, stage / "legs", scenario.outputs.format)
        (stage / "summary.json").write_text(json.dumps(summary, indent=2))
        extra = ""
        if scenario.sweep is not None:
            df = run_sweep(scenario, progress=progress)
            write_table(df, stage / "sweep", "csv")
            extra = sweep_section(df, [e.name for e in scenario.experts], [c.name for c in scenario.categories])
        if scenario.outputs.report:
            write_report(stage / "report.html", f"moe2sim run: {scenario.name} (seed {scenario.seed})",
                         summary, queries, {c.name: c.latency_budget_s for c in scenario.categories},
                         scenario.description, extra)
        out.mkdir(exist_ok=True)
        for old in out.iterdir():
            if old.name.split(".")[0] in ("queries", "legs", "summary", "report", "sweep"):
                old.unlink()
        for f in stage.iterdir():
            f.replace(out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary
