"""The data check (`moe2sim data check DIR`): what a data folder holds per task and split, and flags for
data on which routing figures would mislead.

Per task and split: prompts, models, the best single model on that split (in hindsight) and its accuracy,
and the oracle (right if any model is right), both under each prompt's scoring rule (P(one answer right):
aggregation.Outcomes). Flags (FLAGS): a model right on every prompt of a task, an oracle no better than
the best single model, two models that agree on nearly every prompt, a validation part too small for U(S)
to be trusted, and prompts shared between the train and test splits.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from moe2sim.data.quality import QualityData, QualityTables, validation_mask
from moe2sim.routing.aggregation import Outcomes

MIN_VALIDATION = 50     # validation prompts per task below which U(S) is flagged (SE up to 1/(2√n) > 0.07)
NEAR_IDENTICAL = 0.99   # share of prompts on which two models agree above which they are flagged


@dataclass(frozen=True)
class TaskFigures:
    task: str
    split: str
    prompts: int
    models: int
    best_model: str
    best: float          # the best single model's accuracy on these prompts
    oracle: float        # right if any model is right (expected tasks: the best model's score)


@dataclass(frozen=True)
class Flag:
    kind: str
    message: str


@dataclass(frozen=True)
class Splits:
    """A data folder's splits, each with P(one answer right) per prompt and model."""

    tables: QualityTables
    data: dict[str, QualityData]
    p: dict[str, np.ndarray]

    @classmethod
    def of(cls, tables: QualityTables) -> "Splits":
        splits = list(dict.fromkeys(tables.prompts["split"]))
        data = {s: tables.split(tables.models, s) for s in splits}
        return cls(tables, data, {s: Outcomes.of(d.scores, d.expected).p for s, d in data.items()})

    def per_task(self):
        """(task, split, rows of that task in the split) for every task present in a split."""
        for split, d in self.data.items():
            for task in dict.fromkeys(d.tasks):
                yield task, split, d.rows_of_task(task)


def figures(splits: Splits) -> list[TaskFigures]:
    out = []
    for task, split, rows in splits.per_task():
        p = splits.p[split][rows]
        means = p.mean(axis=0)
        best = int(means.argmax())
        out.append(TaskFigures(task, split, len(rows), p.shape[1], splits.data[split].experts[best],
                               float(means[best]), float(p.max(axis=1).mean())))
    return out


def perfect_model(splits: Splits) -> list[Flag]:
    flags = []
    for task, split, rows in splits.per_task():
        p = splits.p[split][rows]
        for j in np.flatnonzero((p == 1).all(axis=0)):
            flags.append(Flag("perfect_model", f"task {task} ({split}): model {splits.data[split].experts[j]} is right "
                                               f"on all {len(rows)} prompts: no routing can beat it there (or its "
                                               "column is not a model's scores)"))
    return flags


def oracle_is_best_single(splits: Splits) -> list[Flag]:
    return [Flag("oracle_is_best_single", f"task {f.task} ({f.split}): the oracle ({f.oracle:.3f}) equals the best "
                                          f"single model ({f.best_model}, {f.best:.3f}): no prompt where routing "
                                          "can gain")
            for f in figures(splits) if f.oracle - f.best <= 1e-9]


def near_identical(splits: Splits) -> list[Flag]:
    p = np.concatenate(list(splits.p.values()))
    experts = next(iter(splits.data.values())).experts
    flags = []
    for a, b in itertools.combinations(range(p.shape[1]), 2):
        agree = float(np.isclose(p[:, a], p[:, b], atol=1e-6).mean())
        if agree >= NEAR_IDENTICAL:
            flags.append(Flag("near_identical", f"models {experts[a]} and {experts[b]} agree on {agree:.1%} of "
                                                f"{len(p)} prompts: the same model twice, or a copied column?"))
    return flags


def small_validation(splits: Splits) -> list[Flag]:
    if "train" not in splits.data:
        return []
    train = splits.data["train"]
    val = validation_mask(train.prompt_ids)
    flags = []
    for task in dict.fromkeys(train.tasks):
        n = int(val[train.rows_of_task(task)].sum())
        if n < MIN_VALIDATION:
            se = 0.5 / math.sqrt(n) if n else math.inf
            flags.append(Flag("small_validation", f"task {task}: its validation part has {n} prompts (under "
                                                  f"{MIN_VALIDATION}): U(S) there has a standard error up to "
                                                  f"{se:.2f}, too coarse to choose subsets by"))
    return flags


def leakage(splits: Splits) -> list[Flag]:
    prompts = splits.tables.prompts
    if "question" not in prompts or prompts["split"].nunique() < 2:
        return []
    flags = []
    for task, rows in prompts.groupby("task", sort=False, observed=True):
        shared = int((rows.groupby("question", sort=False)["split"].nunique() > 1).sum())
        if shared:
            flags.append(Flag("leakage", f"task {task}: {shared} prompts appear in more than one split: test figures "
                                         "on them are not held out"))
    return flags


FLAGS: dict[str, Callable[[Splits], list[Flag]]] = {
    "perfect_model": perfect_model, "oracle_is_best_single": oracle_is_best_single,
    "near_identical": near_identical, "small_validation": small_validation, "leakage": leakage}


@dataclass(frozen=True)
class DataCheck:
    figures: list[TaskFigures]
    flags: list[Flag]

    def format(self) -> str:
        df = pd.DataFrame([f.__dict__ for f in self.figures]).rename(columns={"best_model": "best single model"})
        lines = [df.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
        lines += [f"flag {f.kind}: {f.message}" for f in self.flags] or ["no flags"]
        return "\n".join(lines)


def check_tables(tables: QualityTables) -> DataCheck:
    splits = Splits.of(tables)
    return DataCheck(figures(splits), [flag for rule in FLAGS.values() for flag in rule(splits)])


def check_data(data: Path) -> DataCheck:
    """The data check of a data folder (prompts.parquet and quality.parquet, as `moe2sim embed` writes)."""
    return check_tables(QualityTables.read(data / "prompts.parquet", data / "quality.parquet"))
