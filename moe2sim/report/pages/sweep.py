"""The page of a budget sweep (`moe2sim sweep`, or `run` of a scenario with a sweep block): accuracy,
subsets, energy and latency of MoE² and the baselines against the budgets, with 95 % bands and the paired
differences when replicated; sweep points where a method finds no subset within the budgets are drawn as
crosses and listed in a table, never dropped silently."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from moe2sim.report.pages.page import FIGSIZE, INFEASIBLE, Figure, html_table, images
from moe2sim.scenario import Scenario


def _axis(df: pd.DataFrame, axis: str, method: str | None = None) -> pd.DataFrame:
    """The points of one axis (and method); empty if the sweep did not vary it."""
    part = df[df["axis"] == axis]
    return part[part["method"] == method] if method is not None else part


def _feasible(part: pd.DataFrame) -> pd.Series:
    return part["feasible"].fillna(False).astype(bool)


def sweep_accuracy(df: pd.DataFrame, axis: str, xlabel: str) -> plt.Figure | None:
    """Test accuracy vs budget per method; hollow markers where a subset breaks the budget, crosses on the
    x axis where the method finds no subset at all."""
    part = _axis(df, axis)
    if part.empty:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    marked = False
    for method, g in part.groupby("method", sort=False):
        ok = g[_feasible(g)]
        line, = ax.plot(ok["value"], ok["accuracy_test"], marker="o", label=method)
        broken = ok[~ok["within_budget"].fillna(True).astype(bool)]
        ax.plot(broken["value"], broken["accuracy_test"], ls="", marker="o", mfc="white", color=line.get_color())
        none = g[~_feasible(g)]
        ax.plot(none["value"], np.zeros(len(none)), color=line.get_color(), clip_on=False, **INFEASIBLE)
        marked = marked or not none.empty
    if marked:  # one legend entry for the crosses of every method
        ax.plot([], [], color="k", label="no subset within the budget (× on the axis)", **INFEASIBLE)
    ax.set(xscale="log", xlabel=xlabel, ylabel="test accuracy", ylim=(0, None),
           title=f"Accuracy vs {axis} budget (hollow: breaks the budget; ×: infeasible)")
    ax.legend()
    return fig


def sweep_subsets(df: pd.DataFrame, experts: list[str]) -> plt.Figure | None:
    """MoE²'s chosen subset at each energy budget (× where none meets the budgets)."""
    part = _axis(df, "energy", "moe2")
    if part.empty:
        return None
    chosen = part["subset"].fillna("").astype(str) if "subset" in part else pd.Series([""] * len(part))
    grid = np.array([[e in s.split("|") for s in chosen] for e in experts], float)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, vmax=1)
    ax.set_yticks(range(len(experts)), experts)
    ax.set_xticks(range(len(part)), [f"{v:g}" + ("" if ok else "\n×") for v, ok in zip(part["value"], _feasible(part))])
    ax.set(xlabel="energy budget (J per query; ×: no subset meets it)", title="MoE² subset per energy budget (green: chosen)")
    return fig


def _band(ax: plt.Axes, df: pd.DataFrame, x: str, metric: str, color: str | None = None) -> None:
    """The 95 % interval of `metric` (columns <metric>_low/_high, present with ≥ 2 replications) as a band."""
    if f"{metric}_low" in df.columns:
        ax.fill_between(df[x], df[f"{metric}_low"], df[f"{metric}_high"], alpha=0.25, color=color, lw=0)


def sweep_energy(df: pd.DataFrame) -> plt.Figure | None:
    """Simulated energy per query of MoE² against the energy budget it was given."""
    part = _axis(df, "energy", "moe2")
    if part.empty or "sim_energy_J_mean" not in part:
        return None
    e, none = part[_feasible(part)], part[~_feasible(part)]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(e["energy_budget_J"], e["sim_energy_J_mean"], marker="o", label="mean per query")
    _band(ax, e, "energy_budget_J", "sim_energy_J_mean")
    ax.plot(e["energy_budget_J"], e["sim_energy_J_max"], marker="^", label="max per query")
    ax.plot(e["energy_budget_J"], e["worst_energy_J"], ls="--", label="predicted worst case")
    ax.plot(part["energy_budget_J"], part["energy_budget_J"], "k:", label="budget")
    if not none.empty:
        ax.plot(none["energy_budget_J"], none["energy_budget_J"], color="tab:red", label="× no subset within it",
                **INFEASIBLE)
    ax.set(xscale="log", yscale="log", xlabel="energy budget (J per query)", ylabel="J per query (simulated)",
           title="MoE² energy vs budget")
    ax.legend()
    return fig


def sweep_latency(df: pd.DataFrame, categories: list[str]) -> plt.Figure | None:
    """Simulated p95 latency of MoE² per category against the latency budget it was given."""
    part = _axis(df, "latency", "moe2")
    if part.empty or not all(f"sim_latency_p95_s[{c}]" in part for c in categories):
        return None
    lat, none = part[_feasible(part)], part[~_feasible(part)]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for c in categories:
        line, = ax.plot(lat[f"latency_budget_s[{c}]"], lat[f"sim_latency_p95_s[{c}]"], marker="o", label=f"{c} p95")
        _band(ax, lat, f"latency_budget_s[{c}]", f"sim_latency_p95_s[{c}]", line.get_color())
        ax.plot(lat[f"latency_budget_s[{c}]"], lat[f"worst_delay_s[{c}]"], ls="--", color=line.get_color())
        ax.plot(none[f"latency_budget_s[{c}]"], none[f"latency_budget_s[{c}]"], color=line.get_color(), **INFEASIBLE)
    budgets = part[[f"latency_budget_s[{c}]" for c in categories]].to_numpy()
    ax.plot([budgets.min(), budgets.max()], [budgets.min(), budgets.max()], "k:", label="budget")
    ax.set(xscale="log", yscale="log", xlabel="latency budget (s)", ylabel="simulated p95 latency (s)",
           title="MoE² latency vs budget (dashed: predicted worst case; ×: infeasible)")
    ax.legend()
    return fig


def sweep_simulated_accuracy(df: pd.DataFrame, axis: str) -> plt.Figure | None:
    """Simulated accuracy vs one budget axis per method, with the 95 % band across replications."""
    part = df[(df["axis"] == axis) & _feasible(df)]
    if part.empty or "sim_accuracy" not in part:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for method, g in part.groupby("method", sort=False):
        line, = ax.plot(g["value"], g["sim_accuracy"], marker="o", label=method)
        _band(ax, g, "value", "sim_accuracy", line.get_color())
    ax.set(xscale="log", xlabel=f"{axis} budget" + (" (J per query)" if axis == "energy" else " (x scenario's)"),
           ylabel="simulated accuracy", title=f"Simulated accuracy vs {axis} budget (band: 95 % interval)")
    ax.legend()
    return fig


def sweep_paired(diffs: pd.DataFrame | None, axis: str, metric: str = "sim_accuracy") -> plt.Figure | None:
    """MoE² − baseline per budget on common random numbers, with 95 % error bars of the paired difference."""
    if diffs is None or diffs.empty or not diffs["low"].notna().any():
        return None
    part = diffs[(diffs["axis"] == axis) & (diffs["metric"] == metric)]
    if part.empty:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for baseline, g in part.groupby("baseline", sort=False):
        ax.errorbar(g["value"], g["diff_mean"], yerr=[g["diff_mean"] - g["low"], g["high"] - g["diff_mean"]],
                    marker="o", capsize=3, label=baseline)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel=f"{axis} budget", ylabel=f"MoE² − baseline ({metric})",
           title=f"Paired difference vs {axis} budget (bars: 95 % interval)")
    ax.legend()
    return fig


def infeasible_table(df: pd.DataFrame) -> str:
    """The sweep points where a method found no subset within the budgets, and why."""
    none = df[~_feasible(df)]
    if none.empty:
        return "<p>Every method found a subset at every sweep point.</p>"
    rows = [[r["axis"], f"{r['value']:g}", r["method"], r.get("reason", "")] for _, r in none.iterrows()]
    return ("<h3>Points where no subset meets the budgets (× in the figures)</h3>"
            + html_table(rows, ["axis", "value", "method", "why"]))


def sweep_section(df: pd.DataFrame, experts: list[str], categories: list[str],
                  diffs: pd.DataFrame | None = None) -> str:
    """The sweep's figures, one per image; with replications, 95 % bands and the paired differences."""
    figures: list[Figure] = [
        (lambda: sweep_accuracy(df, "energy", "energy budget (J per query)"),
         "Test accuracy of each method against the energy budget"),
        (lambda: sweep_accuracy(df, "latency", "latency budget (x the scenario's per-category budgets)"),
         "Test accuracy of each method against the latency budget scale"),
        (lambda: sweep_subsets(df, experts), "Experts MoE² selects at each energy budget"),
        (lambda: sweep_energy(df), "Simulated energy per query of MoE² against its energy budget"),
        (lambda: sweep_latency(df, categories), "Simulated p95 latency of MoE² per category against its budget"),
        *((lambda a=axis: sweep_simulated_accuracy(df, a), f"Simulated accuracy of each method against the {axis} "
           "budget, with its 95 % interval") for axis in ("energy", "latency")),
        *((lambda a=axis: sweep_paired(diffs, a), f"MoE² minus each baseline (paired, common random numbers) "
           f"against the {axis} budget, with 95 % intervals") for axis in ("energy", "latency")),
    ]
    return f"<h2>Budget trade-offs: MoE² vs baselines</h2>{images(figures)}{infeasible_table(df)}"


def sweep_setup_rows(scenario: Scenario, moe2_method: str) -> list[list[str]]:
    """The sweep's axes and methods, and the selection method MoE² uses in it."""
    sweep = scenario.sweep
    return [["sweep: energy budgets (J)", ", ".join(f"{v:g}" for v in sweep.energy_budget_J) or "–"],
            ["sweep: latency scales (x the budgets)", ", ".join(f"{v:g}" for v in sweep.latency_scale) or "–"],
            ["sweep: methods", ", ".join(sweep.methods)],
            ["sweep: MoE²'s selection method", moe2_method]]
