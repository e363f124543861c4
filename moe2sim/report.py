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


def write_report(path, title: str, summary: dict[str, Any], queries: pd.DataFrame,
                 budgets: dict[str, float], notes: str = "") -> None:
    figures = [latency_cdf(queries, budgets), accuracy_per_category(summary),
               energy_per_expert(summary), utilisation(summary)]
    images = "".join(f'<img src="data:image/png;base64,{_png(f)}">' for f in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{width:48%;margin:1%}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>
{_table(summary_rows(summary), SUMMARY_HEADER)}
<p>Energy: {summary['energy_J_total'] / 1e3:.1f} kJ total = {summary['energy_J_active_total'] / 1e3:.1f} kJ active
+ {summary['energy_J_idle_total'] / 1e3:.1f} kJ idle over {summary['run_s']:.0f} s.</p>
{images}</body></html>"""
    path.write_text(page)
