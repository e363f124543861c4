"""The page writer the report pages share: a self-contained HTML page (set-up table, sections), figures
as PNG embedded in base64 (one figure per image, each with alt text), tables.

Every figure builder returns None when it has nothing to draw (an axis a sweep did not vary, a run
without queries), and the image is left out.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np

STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 10, "ytick.labelsize": 10}
FIGSIZE = (7.5, 4.5)
INFEASIBLE = dict(marker="x", ls="", ms=9, mew=2)


def png(fig: plt.Figure) -> str:
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
                parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png(fig)}">')
    return "".join(parts)


def fmt(value: Any, spec: str) -> str:
    """A number formatted, or '–' for a missing one (a mean over no queries)."""
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def html_table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def setup_section(rows: list[list[str]]) -> str:
    return f"<h2>Set-up</h2>{html_table(rows, ['setting', 'value'])}"


@dataclass
class Page:
    """report.html: a title, the scenario's notes, the set-up table (if any) and the sections in order."""

    title: str
    notes: str = ""
    setup: list[list[str]] | None = None
    sections: list[str] = field(default_factory=list)

    def html(self) -> str:
        body = (setup_section(self.setup) if self.setup else "") + "".join(self.sections)
        return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{display:block;width:100%;max-width:825px;
margin:1em 0}}</style></head>
<body><h1>{html.escape(self.title)}</h1><p>{html.escape(self.notes)}</p>
{body}</body></html>"""

    def write(self, path: Path) -> None:
        path.write_text(self.html(), encoding="utf-8")
