"""The control windows of a rollout (an agent driving the budget environment): the budgets it set, the
load, the site (outages, degradations, targets, price) and the reward per window."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from moe2sim.report.pages.page import FIGSIZE, Figure, images


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
