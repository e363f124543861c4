"""A self-contained report.html: summary tables and plots (PNG embedded as base64)."""
from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def latency_cdf(queries: pd.DataFrame, budgets: dict[str, float]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (cat, g) in enumerate(queries.groupby("category", observed=True)):
        x = np.sort(g["latency_s"].to_numpy())
        line, = ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=str(cat))
        ax.axvline(budgets[str(cat)], color=line.get_color(), ls=":", lw=1)
    ax.set(xscale="log", xlabel="latency (s, log)", ylabel="fraction of queries",
           title="Latency CDF per category (dotted: budget)")
    ax.legend(fontsize=8)
    return fig


def energy_per_expert(summary: dict[str, Any]) -> plt.Figure:
    experts = summary["experts"]
    names = list(experts)
    active = np.array([experts[n]["energy_J_active"] for n in names]) / 1e3
    idle = np.array([experts[n]["energy_J_idle"] for n in names]) / 1e3
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh(names, active, label="active")
    ax.barh(names, idle, left=active, label="idle")
    ax.set(xlabel="energy over the run (kJ)", title="Energy per expert")
    ax.legend(fontsize=8)
    return fig


def accuracy_per_category(summary: dict[str, Any]) -> plt.Figure:
    cats = summary["categories"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(list(cats), [c["accuracy"] for c in cats.values()])
    ax.axhline(summary["accuracy"], color="k", ls="--", lw=1, label=f"overall {summary['accuracy']:.3f}")
    ax.set(ylim=(0, 1), ylabel="accuracy", title="Accuracy per category")
    ax.legend(fontsize=8)
    return fig


def utilisation(summary: dict[str, Any]) -> plt.Figure:
    experts = summary["experts"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh(list(experts), [e["utilisation"] for e in experts.values()])
    ax.set(xlim=(0, 1), xlabel="busy fraction of slot time", title="Expert utilisation")
    return fig


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def summary_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """One row per category plus 'all': queries, accuracy, latency mean/p95, energy, violations."""
    blocks = {**summary["categories"], "all": summary}
    return [[name, b["queries"], f"{b['accuracy']:.3f}", f"{b['latency_s']['mean']:.3f}",
             f"{b['latency_s']['p95']:.3f}", f"{b['energy_J_per_query']:.1f}",
             f"{b['budget_violations']['rate']:.3f}"] for name, b in blocks.items()]


SUMMARY_HEADER = ["category", "queries", "accuracy", "latency mean (s)", "latency p95 (s)",
                  "energy/query (J)", "violation rate"]


def sweep_accuracy(df: pd.DataFrame, axis: str, xlabel: str) -> plt.Figure:
    """Test accuracy vs budget per method; hollow markers where a subset breaks the budget."""
    fig, ax = plt.subplots(figsize=(6, 4))
    part = df[(df["axis"] == axis) & df["feasible"]]
    for method, g in part.groupby("method", sort=False):
        line, = ax.plot(g["value"], g["accuracy_test"], marker="o", label=method)
        broken = g[~g["within_budget"].astype(bool)]
        ax.plot(broken["value"], broken["accuracy_test"], ls="", marker="o", mfc="white",
                color=line.get_color())
    ax.set(xscale="log", xlabel=xlabel, ylabel="test accuracy",
           title=f"Accuracy vs {axis} budget (hollow: subset breaks the budget)")
    ax.legend(fontsize=7)
    return fig


def sweep_subsets(df: pd.DataFrame, experts: list[str]) -> plt.Figure:
    """MoE²'s chosen subset at each energy budget."""
    part = df[(df["axis"] == "energy") & (df["method"] == "moe2")]
    grid = np.array([[e in str(s).split("|") for s in part["subset"]] for e in experts], float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, vmax=1)
    ax.set_yticks(range(len(experts)), experts, fontsize=7)
    ax.set_xticks(range(len(part)), [f"{v:g}" for v in part["value"]], fontsize=7)
    ax.set(xlabel="energy budget (J per query)", title="MoE² subset per energy budget (green: chosen)")
    return fig


def sweep_measured(df: pd.DataFrame, categories: list[str]) -> plt.Figure:
    """Simulated energy and p95 latency of MoE² against the budgets it was given."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    e = df[(df["axis"] == "energy") & (df["method"] == "moe2") & df["feasible"]]
    ax1.plot(e["energy_budget_J"], e["sim_energy_J_mean"], marker="o", label="mean per query")
    ax1.plot(e["energy_budget_J"], e["sim_energy_J_max"], marker="^", label="max per query")
    ax1.plot(e["energy_budget_J"], e["worst_energy_J"], ls="--", label="predicted worst case")
    ax1.plot(e["energy_budget_J"], e["energy_budget_J"], "k:", label="budget")
    ax1.set(xlabel="energy budget (J)", ylabel="J per query (simulated)", title="MoE² energy vs budget")
    ax1.legend(fontsize=7)
    lat = df[(df["axis"] == "latency") & (df["method"] == "moe2") & df["feasible"]]
    for c in categories:
        line, = ax2.plot(lat[f"latency_budget_s[{c}]"], lat[f"sim_latency_p95_s[{c}]"], marker="o", label=f"{c} p95")
        ax2.plot(lat[f"latency_budget_s[{c}]"], lat[f"worst_delay_s[{c}]"], ls="--", color=line.get_color())
    lo = min(lat[[f"latency_budget_s[{c}]" for c in categories]].min())
    hi = max(lat[[f"latency_budget_s[{c}]" for c in categories]].max())
    ax2.plot([lo, hi], [lo, hi], "k:", label="budget")
    ax2.set(xscale="log", yscale="log", xlabel="latency budget (s)", ylabel="simulated p95 latency (s)",
            title="MoE² latency vs budget (dashed: predicted worst case)")
    ax2.legend(fontsize=7)
    return fig


def sweep_section(df: pd.DataFrame, experts: list[str], categories: list[str]) -> str:
    figures = [sweep_accuracy(df, "energy", "energy budget (J per query)"),
               sweep_accuracy(df, "latency", "latency budget (x the scenario's per-category budgets)"),
               sweep_subsets(df, experts), sweep_measured(df, categories)]
    images = "".join(f'<img src="data:image/png;base64,{_png(f)}">' for f in figures)
    return f"<h2>Budget trade-offs: MoE² vs baselines</h2>{images}"


def windows_plot(windows: pd.DataFrame, categories: list[str]) -> plt.Figure:
    """Per window: the budgets the agent set, the load, the site (experts down or slow, latency target,
    energy price), and the reward."""
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    hours = windows["time_s"] / 3600
    ax = axes[0]
    ax.plot(hours, windows["energy_budget_J"], color="k", label="energy budget (J)")
    ax.set_ylabel("energy budget (J)")
    twin = ax.twinx()
    for c in categories:
        twin.plot(hours, windows[f"latency_budget_s[{c}]"], lw=0.8, label=f"{c} latency budget (s)")
    twin.set_ylabel("latency budget (s)")
    twin.legend(fontsize=6, loc="upper right")
    axes[1].plot(hours, windows["arrivals"], label="arrival rate (q/s)")
    axes[1].plot(hours, windows["queue_max"], label="longest queue")
    axes[1].set_ylabel("load")
    axes[1].legend(fontsize=7)
    site = axes[2]
    for col, label in (("experts_down", "experts down"), ("experts_slow", "experts degraded"),
                       ("latency_target", "latency target (x budgets)")):
        if col in windows:
            site.step(hours, windows[col], where="post", label=label)
    if "energy_price" in windows:
        price = site.twinx()
        price.step(hours, windows["energy_price"], where="post", color="tab:red", label="energy price (per kJ)")
        price.set_ylabel("energy price per kJ")
        price.legend(fontsize=7, loc="upper right")
    site.set_ylabel("site")
    site.legend(fontsize=7, loc="upper left")
    axes[3].plot(hours, windows["reward"], color="tab:green")
    axes[3].set(ylabel="reward", xlabel="time (h)")
    axes[0].set_title("Per control window: budgets, load, site, reward")
    return fig


def windows_section(windows: pd.DataFrame, categories: list[str]) -> str:
    return (f"<h2>Control windows ({len(windows)}), total reward {windows['reward'].sum():.1f}</h2>"
            f'<img style="width:98%" src="data:image/png;base64,{_png(windows_plot(windows, categories))}">')


def write_report(path, title: str, summary: dict[str, Any] | None, queries: pd.DataFrame | None,
                 budgets: dict[str, float], notes: str = "", extra_html: str = "") -> None:
    body = ""
    if summary is not None:
        figures = [latency_cdf(queries, budgets), accuracy_per_category(summary),
                   energy_per_expert(summary), utilisation(summary)]
        images = "".join(f'<img src="data:image/png;base64,{_png(f)}">' for f in figures)
        body = f"""{_table(summary_rows(summary), SUMMARY_HEADER)}
<p>Energy: {summary['energy_J_total'] / 1e3:.1f} kJ total = {summary['energy_J_active_total'] / 1e3:.1f} kJ active
+ {summary['energy_J_idle_total'] / 1e3:.1f} kJ idle over {summary['run_s']:.0f} s.</p>{images}"""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{width:48%;margin:1%}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>
{body}{extra_html}</body></html>"""
    path.write_text(page)
