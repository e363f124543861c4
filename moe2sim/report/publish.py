"""Everything a command writes, written one way: a command builds its `Results` here (tables, JSON documents,
report.html) and `publish(out, results)` puts them into the output folder through its staging
(report/outputs.py), so they appear together or not at all. `run`, `rollout`, `sweep`, `hardware live` and
`hardware compare` all publish; nothing else writes summary.json or HTML. A live run first `announce`s
itself (summary.json says "running"), so a crash leaves a summary that says the run never finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

from moe2sim.report.compare_table import failures_note, markdown
from moe2sim.report.outputs import OutputDir, write_json, write_table
from moe2sim.report.pages.compare import compare_section
from moe2sim.report.pages.live import failures_section
from moe2sim.report.pages.page import Page
from moe2sim.report.pages.run import results_section, selection_rows, setup_rows
from moe2sim.report.pages.sweep import sweep_section, sweep_setup_rows
from moe2sim.report.pages.windows import windows_section
from moe2sim.report.sweep_table import paired, table
from moe2sim.scenario import Scenario

# what each command may write (checked before any work: none may overwrite a user's file)
RUN_FILES = ("queries.parquet", "queries.csv", "legs.parquet", "legs.csv", "summary.json", "report.html",
             "sweep.csv", "windows.csv", "replications.csv", "paired.csv")
SWEEP_FILES = ("sweep.csv", "paired.csv", "report.html")
LIVE_FILES = (*RUN_FILES, "attempts.csv")
COMPARE_FILES = ("compare.csv", "compare.json", "report.html")


@dataclass
class Results:
    """A command's results: tables (file stem -> (table, "csv" or "parquet")), JSON documents (file name ->
    content, written as strict JSON), and the page (report.html), if any."""

    tables: dict[str, tuple[pd.DataFrame, str]] = field(default_factory=dict)
    documents: dict[str, Any] = field(default_factory=dict)
    page: Page | None = None


def publish(out: OutputDir, results: Results, keep: Iterable[str] = ()) -> None:
    """Write `results` into `out`, staged; files in `keep` (a journal written as the run went) stay."""
    with out.staged(keep) as stage:
        for stem, (frame, fmt) in results.tables.items():
            write_table(frame, stage / stem, fmt)
        for name, document in results.documents.items():
            write_json(stage / name, document)
        if results.page is not None:
            results.page.write(stage / "report.html")


def announce(out: OutputDir, scenario: Scenario, journals: list[str]) -> None:
    """Before a live run: an older run's results go (only files moe2sim wrote), the journals and results are
    listed as ours, and summary.json says the run is running."""
    out.adopt([*LIVE_FILES, *journals], fresh=True)
    write_json(out.path / "summary.json", {"status": "running", "interrupted": None, "scenario": scenario.name,
                                           "journal": journals})


def record_results(scenario: Scenario, title: str, summary: dict[str, Any], queries: pd.DataFrame,
                   legs: pd.DataFrame, setup: list[list[str]] | None = None, sections: Iterable[str] = (),
                   tables: dict[str, tuple[pd.DataFrame, str]] | None = None) -> Results:
    """Records (in the scenario's format), summary.json and (unless the scenario turns it off) report.html:
    the set-up (default: the scenario's policy and budgets), the summary and `sections`."""
    fmt = scenario.outputs.format
    page = (Page(title, scenario.description, setup if setup is not None else setup_rows(scenario),
                 [results_section(summary, queries, {c.name: c.latency_budget_s for c in scenario.categories}),
                  *sections]) if scenario.outputs.report else None)
    return Results({"queries": (queries, fmt), "legs": (legs, fmt), **(tables or {})}, {"summary.json": summary}, page)


def _sweep(scenario: Scenario, sweep: pd.DataFrame, diffs: pd.DataFrame, replications: int, moe2_method: str
           ) -> tuple[dict[str, tuple[pd.DataFrame, str]], str, list[list[str]]]:
    """A sweep's tables (sweep.csv, paired.csv with R ≥ 2), its page section and its set-up rows."""
    tables = {"sweep": (sweep, "csv"), **({"paired": (diffs, "csv")} if replications >= 2 else {})}
    section = sweep_section(sweep, [e.name for e in scenario.experts], [c.name for c in scenario.categories], diffs)
    return tables, section, sweep_setup_rows(scenario, moe2_method)


def run_results(scenario: Scenario, summary: dict[str, Any], queries: pd.DataFrame, legs: pd.DataFrame,
                subset: list[str], per_replication: pd.DataFrame, sweep_rows: pd.DataFrame | None = None,
                moe2_method: str = "") -> Results:
    """`moe2sim run`: the records and summary of replication 0, replications.csv (R ≥ 2), and with a sweep
    block the sweep's tables and figures (report/sweep_table.py; `moe2_method`: MoE²'s selection method in it)."""
    replications = len(per_replication)
    tables = {"replications": (per_replication, "csv")} if replications >= 2 else {}
    setup, sections = [*setup_rows(scenario, subset), *(selection_rows(summary["selection"]) if "selection" in summary else [])], []
    if sweep_rows is not None:
        more, section, sweep_setup = _sweep(scenario, table(sweep_rows), paired(sweep_rows), replications, moe2_method)
        tables, setup, sections = {**tables, **more}, [*setup, *sweep_setup], [section]
    return record_results(scenario, f"moe2sim run: {scenario.name} (seed {scenario.seed})", summary, queries, legs,
                          setup, sections, tables)


def sweep_results(scenario: Scenario, sweep: pd.DataFrame, diffs: pd.DataFrame, replications: int,
                  moe2_method: str) -> Results:
    """`moe2sim sweep`: sweep.csv, paired.csv (R ≥ 2) and report.html."""
    tables, section, sweep_setup = _sweep(scenario, sweep, diffs, replications, moe2_method)
    return Results(tables, {}, Page(f"moe2sim sweep: {scenario.name}", scenario.description,
                                    [*setup_rows(scenario), *sweep_setup], [section]))


def rollout_results(scenario: Scenario, agent: str, seed: int, summary: dict[str, Any], queries: pd.DataFrame,
                    legs: pd.DataFrame, windows: pd.DataFrame) -> Results:
    """`moe2sim rollout`: the simulator's records and summary, windows.csv and the windows' figures."""
    setup = [["agent", agent], *setup_rows(scenario),
             ["budgets", "the agent sets them every window (figures below); above: the starting budgets"]]
    return record_results(scenario, f"moe2sim rollout: {agent} on {scenario.name} (seed {seed})", summary, queries,
                          legs, setup, [windows_section(windows, [c.name for c in scenario.categories])],
                          {"windows": (windows, "csv")})


def _nan_for_null(value: Any) -> Any:
    """The strict summary back in the page's terms (it formats numbers: NaN prints as nan)."""
    if isinstance(value, dict):
        return {k: _nan_for_null(v) for k, v in value.items()}
    return float("nan") if value is None else value


def live_results(scenario: Scenario, summary: dict[str, Any], queries: pd.DataFrame, legs: pd.DataFrame,
                 attempts: pd.DataFrame) -> Results:
    """`hardware live`: every query and leg (failed ones too), attempts.csv, the live summary
    (report/live_summary.py), and a page whose results are over the queries that succeeded."""
    title = f"hardware live: {scenario.name}"
    if summary["queries_succeeded"]:
        ok = (queries["error"] == "").to_numpy()
        results = record_results(scenario, title, _nan_for_null(summary), queries[ok].reset_index(drop=True), legs,
                                 sections=[failures_section(summary)])
    else:
        page = Page(title, sections=["<p>No query succeeded.</p>", failures_section(summary)])
        results = Results(page=page if scenario.outputs.report else None)
    fmt = scenario.outputs.format
    results.tables.update({"queries": (queries, fmt), "legs": (legs, fmt), "attempts": (attempts, "csv")})
    results.documents["summary.json"] = summary
    return results


def compare_results(errors: pd.DataFrame, lost: dict[str, int], simulated: pd.DataFrame,
                    measured: pd.DataFrame) -> Results:
    """`hardware compare`: compare.csv (the error table, report/compare_table.py), compare.json (it and the
    measured failures left out) and report.html."""
    page = Page("Simulated vs measured", sections=[compare_section(failures_note(lost), markdown(errors), simulated,
                                                                    measured)])
    return Results({"compare": (errors, "csv")},
                   {"compare.json": {"failures": lost, "rows": errors.to_dict(orient="records")}}, page)
