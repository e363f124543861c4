"""The failures section of a live run's page: what failed, per expert and per category, and whether the
run was interrupted."""
from __future__ import annotations

import html
from typing import Any


def failures_section(summary: dict[str, Any]) -> str:
    """The live summary's failures as HTML (the page's results are over the queries that succeeded)."""
    fq, fl = summary["failed_queries"], summary["failed_legs"]
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{v}</td></tr>" for n, v in fl["per_expert"].items())
    cats = "".join(f"<tr><td>{html.escape(c)}</td><td>{fq['per_category'][c]}</td><td>{v}</td></tr>"
                   for c, v in fl["per_category"].items())
    state = ("<p><b>The run was interrupted</b>: "
             f"{summary['queries_sent']} of {summary['queries_planned']} queries were sent.</p>"
             if summary["interrupted"] else "")
    return (f"<h2>Failures</h2>{state}<p>{fq['total']} of {summary['queries_recorded']} queries failed "
            f"({fl['total']} of {fl['legs']} legs, {100 * fl['fraction']:.1f} %); they are left out of the "
            f"accuracy, latency and energy above. Errors: the <code>error</code> column of queries/legs, every "
            f"attempt in attempts.csv.</p><table><tr><th>expert</th><th>failed legs</th></tr>{rows}</table>"
            f"<table><tr><th>category</th><th>failed queries</th><th>failed legs</th></tr>{cats}</table>")
