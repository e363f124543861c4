"""Strict JSON: every non-finite float (NaN, ±inf) written as null, so any JSON reader accepts the file."""
from __future__ import annotations

import json
import math
from typing import Any


def strict(obj: Any) -> Any:
    """The object with every non-finite float replaced by None and numpy scalars by Python numbers."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalars
        return strict(obj.item())
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """`obj` as strict JSON text."""
    return json.dumps(strict(obj), indent=indent, allow_nan=False)
