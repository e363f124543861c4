"""Where the bundled scenarios and traces are, installed or in a checkout.

The repository's `scenarios/` and `traces/` folders are installed as the packages
moe2sim.bundled.scenarios and moe2sim.bundled.traces (pyproject's package-dir), so the same rule
finds them in a wheel install, an editable install and a checkout.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path


def bundled_path(relative: str) -> Path:
    """bundled_path("scenarios/paper.yaml"), bundled_path("traces"), ..."""
    top, _, rest = relative.partition("/")
    spec = importlib.util.find_spec(f"moe2sim.bundled.{top}")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"moe2sim's bundled '{top}' folder is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / rest if rest else root
