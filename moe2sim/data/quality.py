"""Per-prompt quality: the prompt table joined with each expert's score, one split at a time."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moe2sim.data.tables import PROMPT_COLUMNS, QUALITY_COLUMNS, read_table

SCORING_RULES = {"threshold", "expected"}
OPTIONAL_PROMPT_COLUMNS = {"scoring": "string", "options": "int"}
from moe2sim.errors import InputError


@dataclass(frozen=True)
class QualityData:
    """Prompts of one split with the score of each scenario expert on each prompt.

    scores[i, j] is expert j's score on prompt i; the prompt's `scoring` says how it becomes right or wrong
    (threshold: right iff > 0; expected: one answer is right with probability = score).
    """

    prompts: pd.DataFrame            # prompt table rows of the split, index 0..n-1
    scores: np.ndarray               # (n_prompts, n_experts) float32
    experts: tuple[str, ...]         # expert model ids, column order of `scores`

    @property
    def prompt_ids(self) -> np.ndarray:
        return self.prompts["prompt_id"].astype(str).to_numpy()

    @property
    def tasks(self) -> np.ndarray:
        return self.prompts["task"].astype(str).to_numpy()

    @property
    def expected(self) -> np.ndarray:
        """(n,) True where the prompt's task is scored by expectation (score = P(one answer right))."""
        if "scoring" not in self.prompts:
            return np.zeros(len(self.prompts), bool)
        return (self.prompts["scoring"].astype(str) == "expected").to_numpy()

    def options(self, declared: dict[str, int] | None = None) -> np.ndarray:
        """(n,) answer choices per prompt (0: free form): `declared` per task overrides the data's column."""
        options = (np.array(self.prompts["options"], np.int64) if "options" in self.prompts
                   else np.zeros(len(self.prompts), np.int64))
        for task, m in (declared or {}).items():
            options[self.rows_of_task(task)] = m
        return options

    def rows_of_task(self, task: str) -> np.ndarray:
        return np.flatnonzero(self.prompts["task"].to_numpy() == task)


@dataclass(frozen=True)
class QualityTables:
    """The prompt table and the long quality table, read once; `split` joins them for one split."""

    prompts: pd.DataFrame
    quality: pd.DataFrame
    prompts_path: Path
    quality_path: Path

    @classmethod
    def read(cls, prompts_path: Path, quality_path: Path) -> "QualityTables":
        prompts = read_table(prompts_path, PROMPT_COLUMNS, "prompt table", optional=OPTIONAL_PROMPT_COLUMNS)
        if "scoring" in prompts:
            bad = sorted(set(prompts["scoring"]) - SCORING_RULES)
            if bad:
                raise InputError(prompts_path, "scoring", f"unknown scoring rule(s) {bad[:3]}; use threshold or expected")
        return cls(prompts, read_table(quality_path, QUALITY_COLUMNS, "quality trace"), prompts_path, quality_path)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.quality["expert"]))

    def split(self, models: list[str], split: str) -> QualityData:
        """prompts x models score matrix of one split; every score must be present."""
        known = set(self.quality["expert"].unique())
        missing = [m for m in models if m not in known]
        if missing:
            raise InputError(self.quality_path, "expert", f"no rows for model(s) {missing}; the trace has {sorted(known)}")
        prompts = self.prompts[self.prompts["split"] == split].reset_index(drop=True)
        if prompts.empty:
            raise InputError(self.prompts_path, "split", f"no prompts in split '{split}'")
        wide = self.quality[self.quality["expert"].isin(models)].pivot_table(
            index="prompt_id", columns="expert", values="score", aggfunc="first", observed=True)
        wide = wide.reindex(index=prompts["prompt_id"], columns=models)
        if wide.isna().any().any():
            bad_model = wide.columns[wide.isna().any()].tolist()[0]
            bad_prompt = wide.index[wide[bad_model].isna()][0]
            raise InputError(self.quality_path, "score", f"no score of '{bad_model}' for prompt '{bad_prompt}'")
        return QualityData(prompts=prompts, scores=wide.to_numpy(np.float32), experts=tuple(models))


def load_quality(prompts_path: Path, quality_path: Path, models: list[str], split: str) -> QualityData:
    return QualityTables.read(prompts_path, quality_path).split(models, split)


def validation_mask(prompt_ids: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """A fixed validation part of the train split: prompts whose CRC-32 of the id falls in the
    lowest `fraction` (stable across runs, machines and row order; never touches the test split)."""
    crc = np.fromiter((zlib.crc32(p.encode()) for p in prompt_ids), np.uint64, len(prompt_ids))
    return crc < fraction * 2**32
