"""Trace tables: reading them with schema checks (columns, types, values) that name file and column.

Schemas are documented in traces/README.md. Tables are CSV or Parquet, chosen by suffix.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
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
    checks = {**columns, **{c: k for c, k in (optional or {}).items() if c in df.columns}}
    for col, kind in checks.items():
        if col not in df.columns:
            raise InputError(path, col, f"missing column (has {list(df.columns)})")
        series = df[col]
        if kind in ("int", "float"):
            values = pd.to_numeric(series, errors="coerce")
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise InputError(path, col, f"row {row}: not a number ({series.iloc[row]!r})")
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


@dataclass(frozen=True)
class QualityData:
    """Prompts of one split with the score of each scenario expert on each prompt.

    scores[i, j] is expert j's score on prompt i (> 0 means answered correctly).
    """

    prompts: pd.DataFrame            # prompt table rows of the split, index 0..n-1
    scores: np.ndarray               # (n_prompts, n_experts) float32
    experts: tuple[str, ...]         # expert model ids, column order of `scores`

    def rows_of_task(self, task: str) -> np.ndarray:
        return np.flatnonzero(self.prompts["task"].to_numpy() == task)


def load_quality(prompts_path: Path, quality_path: Path, models: list[str], split: str) -> QualityData:
    """Join the prompt table and the long quality table into a prompts x experts score matrix."""
    prompts = read_table(prompts_path, PROMPT_COLUMNS, "prompt table")
    quality = read_table(quality_path, QUALITY_COLUMNS, "quality trace")
    known = set(quality["expert"].unique())
    missing = [m for m in models if m not in known]
    if missing:
        raise InputError(quality_path, "expert", f"no rows for model(s) {missing}; the trace has {sorted(known)}")
    prompts = prompts[prompts["split"] == split].reset_index(drop=True)
    if prompts.empty:
        raise InputError(prompts_path, "split", f"no prompts in split '{split}'")
    wide = quality[quality["expert"].isin(models)].pivot_table(
        index="prompt_id", columns="expert", values="score", aggfunc="first", observed=True)
    wide = wide.reindex(index=prompts["prompt_id"], columns=models)
    if wide.isna().any().any():
        bad_model = wide.columns[wide.isna().any()].tolist()[0]
        bad_prompt = wide.index[wide[bad_model].isna()][0]
        raise InputError(quality_path, "score", f"no score of '{bad_model}' for prompt '{bad_prompt}'")
    return QualityData(prompts=prompts, scores=wide.to_numpy(np.float32), experts=tuple(models))


def validation_mask(prompt_ids: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """A fixed validation part of the train split: prompts whose CRC-32 of the id falls in the
    lowest `fraction` (stable across runs, machines and row order; never touches the test split)."""
    crc = np.fromiter((zlib.crc32(p.encode()) for p in prompt_ids), np.uint64, len(prompt_ids))
    return crc < fraction * 2**32
