"""The page of `hardware compare`: the failures left out, the error table, and the latency CDFs of the
simulated and the measured queries."""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from moe2sim.report.pages.page import FIGSIZE, images


def latency_cdfs(simulated: pd.DataFrame, measured: pd.DataFrame) -> plt.Figure:
    """The latency CDF of the simulated and of the measured queries."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for label, q in (("simulated", simulated), ("measured", measured)):
        x = np.sort(q["latency_s"].dropna().to_numpy())
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=label)
    ax.set(xlabel="query latency (s)", ylabel="fraction of queries", title="Latency CDF: simulated vs measured")
    ax.legend()
    return fig


def compare_section(note: str, markdown: str, simulated: pd.DataFrame, measured: pd.DataFrame) -> str:
    """The note on the failures left out, the error table (markdown) and the latency CDFs."""
    return (f"<p>{html.escape(note)}</p><pre>{html.escape(markdown)}</pre>"
            + images([(lambda: latency_cdfs(simulated, measured), "Latency CDF of the simulated and the measured queries")]))
