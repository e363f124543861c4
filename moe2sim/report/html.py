"""A self-contained report.html: what was run (budgets, k, policy, aggregation, selection), summary
tables and plots (PNG embedded as base64, one figure per image, each with alt text).

Every figure builder returns None when it has nothing to draw (an axis a sweep did not vary, a run
without queries), and the image is left out; sweep points where a method finds no subset within the
budgets are drawn as crosses and listed in a table, never dropped silently.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from moe2sim.scenario import Scenario  # noqa: E402

STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 10, "ytick.labelsize": 10}
FIGSIZE = (7.5, 4.5)
INFEASIBLE = dict(marker="x", ls="", ms=9, mew=2)


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


Figure = tuple[Callable[[], "plt.Figure | None"], str]  # (builder, alt text)


def images(figures: list[Figure]) -> str:
    """Each builder's figure as an <img> with its alt text, in a legible style; empty figures left out."""
    parts = []
    with plt.rc_context(STYLE):
        for build, alt in figures:
            fig = build()
            if fig is not None:
                parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">')
    return "".join(parts)


def _fmt(value: Any, spec: str) -> str:
    """A number formatted, or '–' for a missing one (a mean over no queries)."""
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


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


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _violations(block: dict[str, Any], kind: str) -> str:
    n, total = block["budget_violations"][kind], block["queries"]
    return f"{n} ({n / total:.1%})" if total else "0"


def _cell(summary: dict[str, Any], metric: str, value: float | None, digits: int) -> str:
    """`value`, or "mean ± half-width" of its 95 % interval when the summary has one."""
    est, half = _estimate(summary, metric, value)
    interval = metric in summary.get("intervals", {}) and est is not None
    return _fmt(est, f".{digits}f") + (f" ± {half:.{digits}f}" if interval else "")


def summary_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """One row per category plus 'all': queries, accuracy, latency mean/p95, energy (with replications each
    the estimate ± the half-width of its 95 % interval), latency and energy budget violations (count and
    share of the queries)."""
    blocks = {**{f"categories.{n}.": b for n, b in summary["categories"].items()}, "": summary}
    rows = []
    for prefix, b in blocks.items():
        rows.append([prefix.split(".")[1] if prefix else "all", b["queries"],
                     _cell(summary, f"{prefix}accuracy", b["accuracy"], 3),
                     _cell(summary, f"{prefix}latency_s.mean", b["latency_s"]["mean"], 3),
                     _cell(summary, f"{prefix}latency_s.p95", b["latency_s"]["p95"], 3),
                     _cell(summary, f"{prefix}energy_J_per_query", b["energy_J_per_query"], 1),
                     _violations(b, "latency"), _violations(b, "energy")])
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


def setup_section(rows: list[list[str]]) -> str:
    return f"<h2>Set-up</h2>{_table(rows, ['setting', 'value'])}"


# --- budget sweeps ---------------------------------------------------------------------------------

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
            + _table(rows, ["axis", "value", "method", "why"]))


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


# --- control windows (rollout) -----------------------------------------------------------------------

def windows_budgets(windows: pd.DataFrame, categories: list[str]) -> plt.Figure:
    """Per window: the energy and latency budgets the agent set."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    hours = windows["time_s"] / 3600
    ax.plot(hours, windows["energy_budget_J"], color="k", label="energy budget (J)")
    ax.set(xlabel="time (h)", ylabel="energy budget (J per query)", title="Budgets the agent set per window")
    right = ax.twinx()
    for c in categories:
        right.plot(hours, windows[f"latency_budget_s[{c}]"], lw=1, label=f"{c} latency budget (s)")
    right.set_ylabel("latency budget (s)")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    return fig


def windows_load(windows: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    hours = windows["time_s"] / 3600
    ax.plot(hours, windows["arrivals"], label="arrival rate (queries/s)")
    ax.plot(hours, windows["queue_max"], label="longest queue (requests)")
    ax.set(xlabel="time (h)", ylabel="load", title="Load per window")
    ax.legend()
    return fig


def windows_reward(windows: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(windows["time_s"] / 3600, windows["reward"], color="tab:green")
    ax.set(xlabel="time (h)", ylabel="reward", title="Reward per window")
    return fig


def windows_site(windows: pd.DataFrame) -> plt.Figure | None:
    """Per window: experts down or degraded, the latency target and the energy price of a site schedule."""
    cols = [c for c in ("experts_down", "experts_slow", "latency_target") if c in windows]
    if not cols and "energy_price" not in windows:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    hours = windows["time_s"] / 3600
    labels = {"experts_down": "experts down", "experts_slow": "experts degraded",
              "latency_target": "latency target (x budgets)"}
    for col in cols:
        ax.step(hours, windows[col], where="post", label=labels[col])
    if "energy_price" in windows:
        price = ax.twinx()
        price.step(hours, windows["energy_price"], where="post", color="tab:red", label="energy price (per kJ)")
        price.set_ylabel("energy price per kJ")
        price.legend(loc="upper right")
    ax.set(xlabel="time (h)", ylabel="site", title="The site per window: outages, degradations, targets, price")
    if cols:
        ax.legend(loc="upper left")
    return fig


def windows_section(windows: pd.DataFrame, categories: list[str]) -> str:
    figures: list[Figure] = [
        (lambda: windows_budgets(windows, categories), "Energy and latency budgets the agent set in each window"),
        (lambda: windows_load(windows), "Arrival rate and longest queue in each window"),
        (lambda: windows_site(windows), "The site in each window: experts down or degraded, latency target, "
                                        "energy price"),
        (lambda: windows_reward(windows), "Reward in each window"),
    ]
    return (f"<h2>Control windows ({len(windows)}), total reward {windows['reward'].sum():.1f}</h2>"
            f"{images(figures)}")


def run_figures(summary: dict[str, Any], queries: pd.DataFrame, budgets: dict[str, float]) -> list[Figure]:
    return [(lambda: latency_cdf(queries, budgets), "Latency CDF per category with each category's budget"),
            (lambda: accuracy_per_category(summary), "Accuracy per category and overall"),
            (lambda: energy_per_expert(summary), "Active and idle energy per expert over the run"),
            (lambda: utilisation(summary), "Busy fraction of each expert's slots")]


def boundaries_text(summary: dict[str, Any]) -> str:
    return ", ".join(f"{n} {b}" for n, b in summary.get("energy_boundaries", {}).items())


def write_report(path, title: str, summary: dict[str, Any] | None, queries: pd.DataFrame | None,
                 budgets: dict[str, float], notes: str = "", extra_html: str = "",
                 setup: list[list[str]] | None = None) -> None:
    """report.html: the set-up table (if given), the summary (if a run) and `extra_html`."""
    body = setup_section(setup) if setup else ""
    if summary is not None:
        method = summary.get("interval_method")
        note = f"<p>± : half-width of the 95 % interval, {html.escape(method)}.</p>" if method else ""
        body += f"""<h2>Results</h2>{_table(summary_rows(summary), SUMMARY_HEADER)}{note}
<p>Energy: {summary['energy_J_total'] / 1e3:.1f} kJ total = {summary['energy_J_active_total'] / 1e3:.1f} kJ active
+ {summary['energy_J_idle_total'] / 1e3:.1f} kJ idle over {summary['run_s']:.0f} s. A latency violation is an answer
past its category's latency budget; an energy violation, a query whose active energy exceeds the energy
budget.</p>
<p>Energy boundary per expert: {html.escape(boundaries_text(summary))}.
<b>{html.escape(summary.get('energy_boundary_note', ''))}</b>{html.escape(summary.get('energy_boundary_reason', ''))}</p>{images(run_figures(summary, queries, budgets))}"""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{display:block;width:100%;max-width:825px;
margin:1em 0}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>
{body}{extra_html}</body></html>"""
    path.write_text(page, encoding="utf-8")
