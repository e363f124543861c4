"""Per-prompt outcome files -> the prompt and quality tables.

Formats (by suffix): RouterDC's JSON list of {"question": str, "scores": {model_id: number}}; a wide
CSV/Parquet table (a prompt column, one score or true/false column per model, optional per-model cost
and response columns), as public routing benchmarks publish them; a long table (prompt_id, model,
score[, cost], prompt). Any model names, any number of models, the same models in every file; a prompt
missing some model's outcome is dropped and counted. How a score becomes right or wrong is declared
per task (EXPECTED_TASKS: the published protocol). Prompt lengths are counted with the Mistral-7B-v0.1 tokenizer
(SentencePiece `tokenizer.model.v1` from the `mistral-common` package) plus one BOS token.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from moe2sim.data.atomic import atomic_path
from moe2sim.errors import InputError


# The published scoring protocol (RouterDC's evaluation): these tasks' scores are the fraction of sampled
# answers that were right ("expected" tasks); every other task is right iff score > 0 ("threshold").
EXPECTED_TASKS = frozenset({"gsm8k", "humaneval", "mbpp"})
# Choices of the bundled multiple-choice tasks, for the vote (ARC-Challenge: 4 for almost all questions).
TASK_OPTIONS = {"mmlu": 4, "arc_challenge": 4, "cmmlu": 4, "ceval": 4}


@dataclass(frozen=True)
class OutcomeFile:
    task: str
    split: str
    path: Path


@dataclass(frozen=True)
class Outcome:
    """One prompt's outcomes: each model's score and, where the data has it, its cost."""

    question: str
    scores: dict[str, float | None]   # None: no outcome recorded for that model
    costs: dict[str, float]


def _score(value, path: Path, where: str) -> float | None:
    """A score ≥ 0 (booleans are 1/0 correctness); None/NaN is a missing outcome; anything else is an error."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value) or value < 0:
        raise InputError(path, where, f"score must be a number >= 0 (or empty for a missing outcome), got {value!r}")
    return float(value)


def _question(value, path: Path, where: str) -> str:
    """The prompt text; a stringified list of messages (as some benchmarks store prompts) is joined."""
    if isinstance(value, str) and value.lstrip().startswith("[") and value.rstrip().endswith("]"):
        try:
            parts = ast.literal_eval(value)
            if isinstance(parts, list) and all(isinstance(x, str) for x in parts):
                value = "\n".join(parts)
        except (ValueError, SyntaxError):
            pass
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, where, "missing or empty prompt")
    return value


def _routerdc_json(path: Path) -> list[Outcome]:
    """RouterDC's shape: a JSON list of {"question": str, "scores": {model: score}}."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"line {exc.lineno}", f"malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"not UTF-8 text (byte {exc.start}): an outcome file is JSON text") from None
    except RecursionError:
        raise InputError(path, None, "malformed JSON: nested too deeply") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot read: {exc.strerror or exc}") from None
    if not isinstance(records, list) or not records:
        raise InputError(path, None, "expected a non-empty JSON list of {question, scores} records")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(path, f"[{i}]", "expected a {question, scores} record")
        scores = rec.get("scores")
        if not isinstance(scores, dict) or not scores:
            raise InputError(path, f"[{i}].scores", "missing scores (a mapping model -> score)")
        out.append(Outcome(_question(rec.get("question"), path, f"[{i}].question"),
                           {m: _score(v, path, f"[{i}].scores.{m}") for m, v in scores.items()}, {}))
    return out


def _table_rows(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a corrupt file
        raise InputError(path, None, f"cannot read the outcome table: {type(exc).__name__}: {exc}") from None
    if df.empty:
        raise InputError(path, None, "the outcome table has no rows")
    return df


PROMPT_COLUMN_NAMES = ("prompt", "question")
COST_SUFFIXES = ("|total_cost", "|cost", "_cost")
IGNORED_SUFFIXES = ("|model_response", "|response", "_response")
IGNORED_COLUMNS = {"sample_id", "id", "index", "eval_name", "task", "split", "oracle_model_to_route_to", "subject"}


def _long_table(path: Path, df: pd.DataFrame) -> list[Outcome]:
    """A long table: prompt_id, model, score[, cost] and the prompt text (prompt or question)."""
    text = next((c for c in PROMPT_COLUMN_NAMES if c in df.columns), None)
    if text is None:
        raise InputError(path, "prompt", f"a long outcome table needs a prompt or question column (has {list(df.columns)})")
    out = []
    for pid, rows in df.groupby("prompt_id", sort=False):
        scores = {str(m): _score(v, path, f"row {i}: score") for i, m, v in zip(rows.index, rows["model"], rows["score"])}
        costs = {str(m): float(c) for m, c in zip(rows["model"], rows["cost"])} if "cost" in rows else {}
        out.append(Outcome(_question(rows[text].iloc[0], path, f"prompt_id {pid}"), scores,
                           {m: c for m, c in costs.items() if math.isfinite(c)}))
    return out


def _wide_table(path: Path, df: pd.DataFrame) -> list[Outcome]:
    """A wide table as public routing benchmarks publish it: a prompt column, one score or correctness
    column per model, optional `<model>|total_cost` (or `<model>_cost`) and response columns (ignored)."""
    text = next((c for c in PROMPT_COLUMN_NAMES if c in df.columns), None)
    if text is None:
        raise InputError(path, "prompt", f"a wide outcome table needs a prompt or question column (has {list(df.columns)})")
    cost_of = {c[: -len(s)]: c for c in df.columns for s in COST_SUFFIXES if c.endswith(s)}
    models = [c for c in df.columns if c != text and c not in IGNORED_COLUMNS and c not in cost_of.values()
              and not c.endswith(IGNORED_SUFFIXES)]
    if not models:
        raise InputError(path, None, "no model score columns (one numeric or true/false column per model)")
    out = []
    for i, row in enumerate(df.itertuples(index=False)):
        values = dict(zip(df.columns, row))
        costs = {m: float(values[c]) for m, c in cost_of.items() if m in models and pd.notna(values[c])}
        out.append(Outcome(_question(values[text], path, f"row {i}: {text}"),
                           {m: _score(values[m], path, f"row {i}: {m}") for m in models}, costs))
    return out


def _table(path: Path) -> list[Outcome]:
    df = _table_rows(path)
    return _long_table(path, df) if {"prompt_id", "model", "score"} <= set(df.columns) else _wide_table(path, df)


READERS = {".json": _routerdc_json, ".csv": _table, ".parquet": _table}


def read_outcomes(source: OutcomeFile) -> list[Outcome]:
    """One outcome file in any supported format (by suffix: RouterDC JSON; a wide or long CSV/Parquet
    table); errors name the file and the record or column."""
    path = source.path
    if not path.is_file():
        raise InputError(path, None, "outcome file not found")
    if path.suffix not in READERS:
        raise InputError(path, None, f"unknown outcome format '{path.suffix}' (known: {', '.join(READERS)})")
    return READERS[path.suffix](path)


def mistral_token_counter() -> Callable[[str], int]:
    try:
        import sentencepiece as spm
        model = resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    except ImportError:
        raise InputError(None, None, "counting prompt tokens needs the optional extra: pip install -e '.[embed]'") from None
    with resources.as_file(model) as file:
        sp = spm.SentencePieceProcessor(model_file=str(file))
    return lambda text: len(sp.encode(text)) + 1


def outcome_tables(sources: list[OutcomeFile], subject_of: Callable[[str, str], str] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Prompt table, long quality table (schemas in traces/README.md) and the number of prompts dropped
    for a missing outcome, from outcome files of any supported format.

    Every file must have the same models; a prompt lacking some model's outcome is dropped (counted).
    prompt_id = task/split/index (index: position in its file); `subject_of(task, question)` may label a
    prompt's subject. A model's cost per prompt, where the data has it, is kept in the `cost` column.
    """
    count_tokens = mistral_token_counter()
    prompts: list[dict] = []
    quality: dict[str, list] = {"prompt_id": [], "expert": [], "score": [], "cost": []}
    experts: list[str] | None = None
    first, dropped = None, 0
    for src in sources:
        for i, rec in enumerate(read_outcomes(src)):
            if experts is None:
                experts, first = list(rec.scores), src.path
            elif set(rec.scores) != set(experts):
                diff = sorted(set(rec.scores) ^ set(experts))
                raise InputError(src.path, f"record {i}", f"models differ from those in {first}: {diff}")
            if any(rec.scores[m] is None for m in experts):
                dropped += 1
                continue
            pid = f"{src.task}/{src.split}/{i:04d}"
            q = rec.question
            prompts.append({"prompt_id": pid, "task": src.task, "split": src.split,
                            "subject": subject_of(src.task, q) if subject_of else "",
                            "scoring": "expected" if src.task in EXPECTED_TASKS else "threshold",
                            "options": TASK_OPTIONS.get(src.task, 0),
                            "prompt_tokens": count_tokens(q), "prompt_bytes": len(q.encode("utf-8")),
                            "question": q})
            quality["prompt_id"] += [pid] * len(experts)
            quality["expert"] += experts
            quality["score"] += [rec.scores[m] for m in experts]
            quality["cost"] += [rec.costs.get(m, np.nan) for m in experts]
    if not prompts:
        raise InputError(sources[0].path if sources else None, None, "no prompt has an outcome for every model")
    p = pd.DataFrame(prompts)
    for col in ("task", "split", "subject", "scoring"):
        p[col] = pd.Categorical(p[col], categories=list(dict.fromkeys(p[col])))
    p = p.astype({"prompt_tokens": "int32", "prompt_bytes": "int32", "options": "int16"})
    q = pd.DataFrame(quality)
    if q["cost"].isna().all():
        q = q.drop(columns="cost")
    q["correct"] = q["score"] > 0
    q["expert"] = pd.Categorical(q["expert"], categories=experts)
    q["score"] = q["score"].astype("float32")
    return p, q, dropped


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, compression="zstd", index=False)


DATA_FILES = ("prompts.parquet", "quality.parquet", "embeddings.npz")


@dataclass(frozen=True)
class DataFolder:
    """What `moe2sim embed` wrote, and what it had to leave out or warn about."""

    prompts: int
    models: int
    dim: int
    dropped: int           # prompts without an outcome for every model
    with_cost: bool
    warnings: list[str]


def write_data_folder(sources: list[OutcomeFile], out: Path, tail_tokens: int | None = None,
                      progress: bool = True) -> DataFolder:
    """`moe2sim embed`: outcome files -> out/{prompts,quality}.parquet and out/embeddings.npz. A folder of
    test files only is a test-only data folder (evaluate a gate trained elsewhere on it)."""
    from moe2sim.data.embeddings import embed_texts, save_embeddings

    if not sources:
        raise InputError("moe2sim embed", "--train/--test", "give at least one outcome file")
    prompts, quality, dropped = outcome_tables(sources)
    matrix, report = embed_texts(prompts["question"].tolist(), tail_tokens, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    save_embeddings(out / "embeddings.npz", prompts["prompt_id"].to_numpy(), matrix)
    write_parquet_atomic(quality, out / "quality.parquet")
    write_parquet_atomic(prompts, out / "prompts.parquet")
    return DataFolder(len(prompts), quality["expert"].nunique(), int(matrix.shape[1]), dropped,
                      "cost" in quality.columns, report.warnings())
