"""Plain tables (CSV or Parquet, by suffix) read with schema checks that name the file and column.

Column schemas of every bundled table are documented in traces/README.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.errors import InputError

PROMPT_COLUMNS = {"prompt_id": "string", "task": "string", "split": "string",
                  "prompt_tokens": "int", "prompt_bytes": "int"}
QUALITY_COLUMNS = {"prompt_id": "string", "expert": "string", "score": "float", "correct": "bool"}
DEVICE_TRACE_COLUMNS = {"model": "string", "prompt_tokens": "int", "output_tokens": "int",
                        "ttft_s": "float", "decode_s": "float", "active_energy_J": "float"}


def read_table(path: Path, columns: dict[str, str], what: str, optional: dict[str, str] | None = None
               ) -> pd.DataFrame:
    """Read a CSV/Parquet table; check each required column (and each optional one present) holds
    the right kind of values."""
    if not path.is_file():
        raise InputError(path, None, f"{what} file not found")

    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix in (".csv", ".gz"):
            df = pd.read_csv(path)
        else:
            raise InputError(path, None, f"{what} must be .csv or .parquet")
    except InputError:
        raise
    except Exception as exc:  # pyarrow/pandas raise many types for a corrupt file
        raise InputError(path, None, f"cannot read {what}: {type(exc).__name__}: {exc}") from None
    if df.empty:
        raise InputError(path, None, f"{what} has no rows")
    checks = {**columns, **{c: k for c, k in (optional or {}).items() if c in df.columns}}
    for col, kind in checks.items():
        if col not in df.columns:
            raise InputError(path, col, f"missing column (has {list(df.columns)})")
        series = df[col]
        if kind in ("int", "float"):
            values = pd.to_numeric(series, errors="coerce")
            bad = ~np.isfinite(values.to_numpy(float))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InputError(path, col, f"row {row}: not a finite number ({series.iloc[row]!r})")
            if kind == "int" and not np.all(np.mod(values, 1) == 0):
                raise InputError(path, col, "must hold whole numbers")
            if np.any(values < 0):
                raise InputError(path, col, "must not be negative")
            df[col] = values.astype("int64" if kind == "int" else "float64")
        elif kind == "bool":
            if series.dtype != bool:
                mapped = series.map({True: True, False: False, "True": True, "False": False,
                                     "true": True, "false": False, 1: True, 0: False})
                if mapped.isna().any():
                    raise InputError(path, col, "must hold true/false")
                df[col] = mapped.astype(bool)
        else:
            if series.isna().any():
                raise InputError(path, col, "has empty values")
            df[col] = series.astype(str)
    return df

