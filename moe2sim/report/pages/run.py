"""The page of one run (`moe2sim run`, `rollout`, `hardware live`): what was run, the summary table with
95 % intervals, energy, and the figures: latency CDF per category, accuracy per category, energy and
utilisation per expert."""
from __future__ import annotations

import html
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from moe2sim.report.pages.page import FIGSIZE, Figure, fmt, html_table, images
from moe2sim.scenario import Scenario


def latency_cdf(queries: pd.DataFrame, budgets: dict[str, float]) -> plt.Figure | None:
    if queries is None or queries.empty:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for cat, g in queries.groupby("category", observed=True):
        x = np.sort(g["latency_s"].to_numpy())
        line, = ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=str(cat))
        if str(cat) in budgets:
            ax.axvline(budgets[str(cat)], color=line.get_color(), ls=":", lw=1.5)
    log = bool((queries["latency_s"] > 0).all())
    ax.set(xscale="log" if log else "linear", xlabel=f"latency (s{', log scale' if log else ''})",
           ylabel="fraction of queries", title="Latency CDF per category (dotted: its budget)")
    ax.legend()
    return fig


def energy_per_expert(summary: dict[str, Any]) -> plt.Figure:
    experts = summary["experts"]
    names = list(experts)
    active = np.array([experts[n]["energy_J_active"] for n in names]) / 1e3
    idle = np.array([experts[n]["energy_J_idle"] for n in names]) / 1e3
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.barh(names, active, label="active")
    ax.barh(names, idle, left=active, label="idle")
    ax.set(xlabel="energy over the run (kJ)", title="Energy per expert")
    ax.legend()
    return fig


def _estimate(summary: dict[str, Any], metric: str, value: float | None) -> tuple[float | None, float]:
    """(estimate, 95 % half-width) of a flattened metric: the interval's mean if the summary has one, else
    `value` with half-width 0."""
    iv = summary.get("intervals", {}).get(metric)
    if iv is None or iv.get("mean") is None:
        return value, 0.0
    return iv["mean"], (iv["high"] - iv["low"]) / 2 if iv.get("high") is not None else 0.0


def accuracy_per_category(summary: dict[str, Any]) -> plt.Figure | None:
    """Accuracy per category with its 95 % interval as an error bar (when the summary has intervals)."""
    cats = summary["categories"]
    if not cats:
        return None
    est = [_estimate(summary, f"categories.{n}.accuracy", c["accuracy"]) for n, c in cats.items()]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.bar(list(cats), [e or 0.0 for e, _ in est], yerr=[h for _, h in est], capsize=4)
    if summary["accuracy"] is not None:
        overall, half = _estimate(summary, "accuracy", summary["accuracy"])
        ax.axhline(overall, color="k", ls="--", lw=1, label=f"overall {overall:.3f} ± {half:.3f}")
        ax.legend()
    ax.set(ylim=(0, 1), ylabel="accuracy", title="Accuracy per category (bars: 95 % interval)")
    return fig


def utilisation(summary: dict[str, Any]) -> plt.Figure:
    experts = summary["experts"]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.barh(list(experts), [e["utilisation"] for e in experts.values()])
    ax.set(xlim=(0, 1), xlabel="busy fraction of slot time", title="Expert utilisation")
    return fig


def html_table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(summary: dict[str, Any], metric: str, value: float | None, digits: int) -> str:
    """`value`, or "mean ± half-width" of its 95 % interval when the summary has one."""
    est, half = _estimate(summary, metric, value)
    interval = metric in summary.get("intervals", {}) and est is not None
    doubtful = "?" if metric in summary.get("intervals_unreliable", []) else ""
    return fmt(est, f".{digits}f") + (f" ± {half:.{digits}f}{doubtful}" if interval else "")


def _violations(summary: dict[str, Any], prefix: str, block: dict[str, Any], kind: str) -> str:
    """Violations of one kind, count and share of the queries, by the table's one estimator: the run's, or
    with replications the mean over them."""
    n, _ = _estimate(summary, f"{prefix}budget_violations.{kind}", block["budget_violations"][kind])
    total, _ = _estimate(summary, f"{prefix}queries", block["queries"])
    return f"{n:.{0 if float(n).is_integer() else 1}f} ({n / total:.1%})" if total else "0"


def summary_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """One row per category plus 'all', every figure by one estimator (the run's own, or with replications the
    mean over them): queries, accuracy, latency mean/p95, energy, each ± the half-width of its 95 % interval
    where it has one (an interval the run cannot support is marked "?"), latency and energy budget
    violations (count and share of the queries)."""
    blocks = {**{f"categories.{n}.": b for n, b in summary["categories"].items()}, "": summary}
    rows = []
    for prefix, b in blocks.items():
        queries, _ = _estimate(summary, f"{prefix}queries", b["queries"])
        rows.append([prefix.split(".")[1] if prefix else "all", fmt(queries, ".0f" if float(queries).is_integer() else ".1f"),
                     _cell(summary, f"{prefix}accuracy", b["accuracy"], 3),
                     _cell(summary, f"{prefix}latency_s.mean", b["latency_s"]["mean"], 3),
                     _cell(summary, f"{prefix}latency_s.p95", b["latency_s"]["p95"], 3),
                     _cell(summary, f"{prefix}energy_J_per_query", b["energy_J_per_query"], 1),
                     _violations(summary, prefix, b, "latency"), _violations(summary, prefix, b, "energy")])
    return rows


SUMMARY_HEADER = ["category", "queries", "accuracy", "latency mean (s)", "latency p95 (s)",
                  "energy/query (J)", "latency violations", "energy violations"]


def setup_rows(scenario: Scenario, subset: list[str] | None = None) -> list[list[str]]:
    """What was run: policy, k, aggregation, selection method, the allowed and chosen experts, budgets."""
    p = scenario.policy
    method = p.selection.method + (" (no selection: the budgets do not choose the experts)"
                                   if p.selection.method == "none" else "")
    rows = [["policy (router)", p.name], ["k (experts per query)", str(p.k)], ["aggregation", p.aggregation],
            ["selection method", method], ["allowed experts", ", ".join(scenario.allowed_experts)]]
    if subset is not None:
        rows.append(["subset S used", ", ".join(subset)])
    rows.append(["energy budget (J per query)", f"{scenario.energy_budget_J:g}"])
    rows += [[f"latency budget: {c.name} (s)", f"{c.latency_budget_s:g}"] for c in scenario.categories]
    return rows


def selection_rows(account: dict[str, Any]) -> list[list[str]]:
    """The report's set-up rows of a selection account."""
    rows = [["routing input", account["routing"]]]
    if "U" not in account:
        return rows
    rows.append(["U(S) of the subset used", f"{account['U']:.4f} ± {account['U_se']:.4f} (SE; {account['U_source']}, "
                                            f"{account['U_prompts']} prompts)"])
    rows += [[f"U(S): {row['role']}", f"{row['U']:.4f} ± {row['U_se']:.4f}; {', '.join(row['subset'])}; "
              f"{row['U_minus_chosen']:+.4f} ± {row['U_minus_chosen_se']:.4f} paired vs the subset used; "
              f"{row['worst_case_energy_J']:.0f} J worst case"] for row in account["compared"][1:]]
    return rows


def run_figures(summary: dict[str, Any], queries: pd.DataFrame, budgets: dict[str, float]) -> list[Figure]:
    return [(lambda: latency_cdf(queries, budgets), "Latency CDF per category with each category's budget"),
            (lambda: accuracy_per_category(summary), "Accuracy per category and overall"),
            (lambda: energy_per_expert(summary), "Active and idle energy per expert over the run"),
            (lambda: utilisation(summary), "Busy fraction of each expert's slots")]


def unreliable_note(summary: dict[str, Any]) -> str:
    """'' when every interval can be trusted, else a sentence on the ones marked "?"."""
    flagged = summary.get("intervals_unreliable", [])
    if not flagged:
        return ""
    why = summary["intervals"][flagged[0]].get("why")
    return (f" ?: {len(flagged)} interval(s) this single run cannot support (e.g. {flagged[0]}: {why}); "
            "run longer or with --replications")


def boundaries_text(summary: dict[str, Any]) -> str:
    return ", ".join(f"{n} {b}" for n, b in summary.get("energy_boundaries", {}).items())


def results_section(summary: dict[str, Any], queries: pd.DataFrame, budgets: dict[str, float]) -> str:
    """The run's results: the summary table, energy totals and boundaries, the figures."""
    method = summary.get("interval_method")
    note = f"<p>± : half-width of the 95 % interval, {html.escape(method)}.{html.escape(unreliable_note(summary))}</p>" \
        if method else ""
    return f"""<h2>Results</h2>{html_table(summary_rows(summary), SUMMARY_HEADER)}{note}
<p>Energy: {summary['energy_J_total'] / 1e3:.1f} kJ total = {summary['energy_J_active_total'] / 1e3:.1f} kJ active
+ {summary['energy_J_idle_total'] / 1e3:.1f} kJ idle over {summary['run_s']:.0f} s. A latency violation is an answer
past its category's latency budget; an energy violation, a query whose active energy exceeds the energy
budget.</p>
<p>Energy boundary per expert: {html.escape(boundaries_text(summary))}.
<b>{html.escape(summary.get('energy_boundary_note', ''))}</b>{html.escape(summary.get('energy_boundary_reason', ''))}</p>{images(run_figures(summary, queries, budgets))}"""
