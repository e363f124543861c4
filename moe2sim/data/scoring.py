"""How a task's scores become right or wrong, and how many answer choices it has: declared, or inferred
with a stated reason — never guessed silently.

Scoring rules (quality.SCORING_RULES): `threshold` (an answer is right iff score > 0) and `expected`
(score = the probability that one answer is right, e.g. the fraction of sampled answers that were right).
Precedence, per prompt: the data's own `scoring` / `options` value for that prompt; else the task's
declaration (`--scoring TASK=RULE`, `--options TASK=M`, or a tasks file, the flags winning); else the
inference below, which `moe2sim embed` prints for every task with its reason.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moe2sim.errors import InputError, from_validation

# The published protocol of the bundled tasks (RouterDC's evaluation): sampled-answer tasks are scored by
# expectation; the multiple-choice tasks' scores are the probability of the right option, right iff > 0.
PUBLISHED_SCORING = {"gsm8k": "expected", "humaneval": "expected", "mbpp": "expected",
                     "mmlu": "threshold", "arc_challenge": "threshold", "cmmlu": "threshold", "ceval": "threshold"}
PUBLISHED_OPTIONS = {"mmlu": 4, "arc_challenge": 4, "cmmlu": 4, "ceval": 4}
# A line that offers an answer choice: "A. text", "B) text", "(C) text", "D: text".
CHOICE_LINE = re.compile(r"^\s*\(?([A-J])[.):]\s", re.MULTILINE)
CHOICE_SHARE = 0.9  # prompts of a task that must list choices A.. for the task to count as multiple choice


class TaskDeclaration(BaseModel):
    """One task's entry in a tasks file (YAML: {task: {scoring: expected, options: 4}})."""

    model_config = ConfigDict(extra="forbid")
    scoring: Literal["threshold", "expected"] | None = None
    options: int | None = Field(None, ge=0, description="answer choices (0: free form, else at least 2)")

    @field_validator("options")
    @classmethod
    def _not_one(cls, value: int | None) -> int | None:
        if value == 1:
            raise ValueError("a multiple-choice task has at least 2 choices (0: free form)")
        return value


@dataclass(frozen=True)
class TaskRule:
    """A task's scoring rule and answer choices, each with where it came from."""

    scoring: str
    scoring_source: str
    options: int
    options_source: str

    def describe(self, task: str) -> str:
        choices = f"{self.options} answer choices" if self.options else "free form (no answer choices)"
        return f"task {task}: scoring {self.scoring} ({self.scoring_source}); {choices} ({self.options_source})"


def read_task_file(path: Path) -> dict[str, TaskDeclaration]:
    """A tasks file: YAML mapping each task to its scoring rule and/or its answer choices."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, None, f"cannot read the tasks file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(path, None, f"malformed YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not raw:
        raise InputError(path, None, "expected a mapping task -> {scoring: threshold|expected, options: M}")
    out = {}
    for task, entry in raw.items():
        try:
            out[str(task)] = TaskDeclaration.model_validate(entry if entry is not None else {})
        except ValidationError as exc:
            err = from_validation(path, exc)
            raise InputError(path, f"{task}.{err.field}" if err.field else str(task), err.message) from None
    return out


def infer_scoring(task: str, scores: np.ndarray) -> tuple[str, str]:
    """(rule, why) for a task no one declared: its published protocol, else from its scores."""
    if task in PUBLISHED_SCORING:
        return PUBLISHED_SCORING[task], f"inferred: the published protocol for {task}"
    fractional = float(np.mean((scores > 0) & (scores < 1)))
    if fractional > 0:
        return "expected", (f"inferred: {fractional:.0%} of scores are fractional, read as the probability one "
                            f"answer is right; declare --scoring {task}=threshold if any score > 0 means right")
    return "threshold", "inferred: every score is 0 or 1, where both rules agree"


def infer_options(task: str, questions: list[str]) -> tuple[int, str]:
    """(choices, why) for a task no one declared: its published count, else the choices A., B., ... its
    prompts list (when at least CHOICE_SHARE of them do, the commonest count), else 0 (free form)."""
    if task in PUBLISHED_OPTIONS:
        return PUBLISHED_OPTIONS[task], f"inferred: the published format of {task}"
    counts = Counter(_listed_choices(q) for q in questions)
    listed = sum(n for m, n in counts.items() if m >= 2)
    if questions and listed >= CHOICE_SHARE * len(questions):
        m = max((m for m in counts if m >= 2), key=lambda m: counts[m])
        return m, (f"inferred: {listed} of {len(questions)} prompts list choices A.–{chr(64 + m)}.; "
                   f"declare --options {task}=M otherwise")
    return 0, f"inferred: the prompts list no answer choices; declare --options {task}=M for a multiple-choice task"


def _listed_choices(question: str) -> int:
    """How many choices A., B., ... a prompt lists (consecutive from A), 0 if none."""
    letters = set(CHOICE_LINE.findall(question))
    n = 0
    while chr(65 + n) in letters:
        n += 1
    return n


# task -> field ("scoring" or "options") -> (value, who declared it: a flag or a tasks file)
Declarations = dict[str, dict[str, tuple[object, str]]]


def declarations(tasks_file: Path | None = None, scoring: dict[str, str] | None = None,
                 options: dict[str, int] | None = None) -> Declarations:
    """What the user declared: a tasks file's entries, then the flags (--scoring, --options) over them."""
    out: Declarations = {}
    if tasks_file is not None:
        for task, entry in read_task_file(tasks_file).items():
            for name, value in entry.model_dump(exclude_none=True).items():
                out.setdefault(task, {})[name] = (value, str(tasks_file))
    for name, flag, values in (("scoring", "--scoring", scoring), ("options", "--options", options)):
        for task, value in (values or {}).items():
            out.setdefault(task, {})[name] = (value, flag)
    return out


def task_rule(task: str, scores: np.ndarray, questions: list[str], declared: dict[str, tuple[object, str]]
              ) -> TaskRule:
    """The rule of one task: what was declared for it, the rest inferred with its reason."""
    if "scoring" in declared:
        scoring, by = declared["scoring"]
        scoring, scoring_source = str(scoring), f"declared by {by}"
    else:
        scoring, scoring_source = infer_scoring(task, scores)
    if "options" in declared:
        options, by = declared["options"]
        options, options_source = int(options), f"declared by {by}"
    else:
        options, options_source = infer_options(task, questions)
    return TaskRule(scoring, scoring_source, options, options_source)
