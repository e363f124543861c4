"""Per-prompt outcome files -> the prompt and quality tables.

Formats (by suffix): RouterDC's JSON list of {"question": str, "scores": {model_id: number}}; a wide
CSV/Parquet table (a prompt column, one score or true/false column per model, optional per-model cost
and response columns), as public routing benchmarks publish them; a long table (prompt_id, model,
score[, cost], prompt). Any model names, any number of models, the same models in every file; a prompt
missing some model's outcome is dropped and counted. Read strictly: a score is finite and in [0, 1] (or
true/false), a row index written as a column is recognised and dropped with a note, a column or key given
twice is an error; every error names the file, the row and the column. How a score becomes right or wrong
is declared or inferred with its reason (data/scoring.py). Prompt lengths are counted with the Mistral-7B-v0.1 tokenizer
(SentencePiece `tokenizer.model.v1` from the `mistral-common` package) plus one BOS token.
"""
from __future__ import annotations

import ast
import csv
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from moe2sim.data.atomic import atomic_path
from moe2sim.data.quality import SCORING_RULES
from moe2sim.data.scoring import Declarations, TaskRule, task_rule
from moe2sim.errors import InputError


@dataclass(frozen=True)
class OutcomeFile:
    task: str
    split: str
    path: Path


@dataclass(frozen=True)
class Outcome:
    """One prompt's outcomes: each model's score and, where the data has it, its cost, and the prompt's own
    scoring rule and answer choices where the data declares them (a `scoring` / `options` column or key)."""

    question: str
    scores: dict[str, float | None]   # None: no outcome recorded for that model
    costs: dict[str, float]
    scoring: str | None = None
    options: int | None = None


@dataclass(frozen=True)
class OutcomeRead:
    """One file's outcomes, and notes on what the reader recognised and dropped (index columns)."""

    outcomes: list[Outcome]
    notes: list[str]


TRUE_FALSE = {"true": 1.0, "false": 0.0}


def _score(value, path: Path, where: str) -> float | None:
    """A score in [0, 1] (true/false: 1/0); None/NaN is a missing outcome; anything else is an error."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_FALSE:
        return TRUE_FALSE[value.strip().lower()]
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(path, where, f"not a number ({value!r}): a score is a number in [0, 1], true/false, "
                                          "or empty for a missing outcome") from None
    if not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(path, where, f"score must be a number in [0, 1] (or empty for a missing outcome), "
                                      f"got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise InputError(path, where, f"score {value!r} is outside [0, 1]: scores are the probability or fraction "
                                      "of right answers (rescale, e.g. divide a 0-10 rating by 10)")
    return float(value)


def _cost(value, path: Path, where: str) -> float | None:
    """A cost >= 0 (None where missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        cost = float(value)
    except (TypeError, ValueError):
        raise InputError(path, where, f"cost must be a number >= 0, got {value!r}") from None
    if not math.isfinite(cost) or cost < 0:
        raise InputError(path, where, f"cost must be a finite number >= 0, got {value!r}")
    return cost


def _scoring(value, path: Path, where: str) -> str | None:
    """The prompt's own scoring rule (None where the data leaves it empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    rule = str(value).strip()
    if rule not in SCORING_RULES:
        raise InputError(path, where, f"unknown scoring rule {rule!r}; use threshold or expected")
    return rule


def _options(value, path: Path, where: str) -> int | None:
    """The prompt's own number of answer choices (0: free form; None where the data leaves it empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number.is_integer() or number < 0 or number == 1:
        raise InputError(path, where, f"answer choices must be 0 (free form) or a whole number >= 2, got {value!r}")
    return int(number)


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


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object; a key given twice (json keeps the last silently) is an error."""
    keys = [k for k, _ in pairs]
    twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if twice is not None:
        raise ValueError(f"duplicated key {twice!r}")
    return dict(pairs)


def _routerdc_json(path: Path) -> OutcomeRead:
    """RouterDC's shape: a JSON list of {"question": str, "scores": {model: score}[, "scoring", "options"]}."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"line {exc.lineno}", f"malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"not UTF-8 text (byte {exc.start}): an outcome file is JSON text") from None
    except RecursionError:
        raise InputError(path, None, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # a duplicated key
        raise InputError(path, None, f"{exc}: each model (and field) must appear once per record") from None
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
                           {m: _score(v, path, f"[{i}].scores.{m}") for m, v in scores.items()}, {},
                           _scoring(rec.get("scoring"), path, f"[{i}].scoring"),
                           _options(rec.get("options"), path, f"[{i}].options")))
    return OutcomeRead(out, [])


def _table_rows(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a corrupt file
        raise InputError(path, None, f"cannot read the outcome table: {type(exc).__name__}: {exc}") from None
    if df.empty:
        raise InputError(path, None, "the outcome table has no rows")
    header = _csv_header(path) if path.suffix == ".csv" else [str(c) for c in df.columns]
    twice = next((c for i, c in enumerate(header) if c in header[:i]), None)
    if twice is not None:
        raise InputError(path, twice, "column name appears twice: which one holds the scores is ambiguous")
    return df


def _csv_header(path: Path) -> list[str]:
    """A CSV's column names as written (pandas renames a repeated name 'a' to 'a.1')."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return next(csv.reader(f), [])


PROMPT_COLUMN_NAMES = ("prompt", "question")
COST_SUFFIXES = ("|total_cost", "|cost", "_cost")
IGNORED_SUFFIXES = ("|model_response", "|response", "_response")
IGNORED_COLUMNS = {"sample_id", "id", "index", "eval_name", "task", "split", "oracle_model_to_route_to", "subject"}
PROMPT_RULE_COLUMNS = ("scoring", "options")  # the prompt's own scoring rule and answer choices
UNNAMED = re.compile(r"(Unnamed: \d+|__index_level_\d+__)?")  # how pandas names an index written as a column


def _index_column(df: pd.DataFrame, column: str) -> str | None:
    """Why `column` is a row index and not a model's scores (None if it is not one): an unnamed column, or
    whole numbers rising in order (0..n-1 as pandas writes its index; never valid scores for n >= 3)."""
    if UNNAMED.fullmatch(str(column)):
        return "an unnamed column"
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(float)
    if len(values) >= 3 and np.isfinite(values).all() and np.all(values % 1 == 0) and np.all(np.diff(values) > 0):
        return f"whole numbers rising in order, {values[0]:.0f}..{values[-1]:.0f}"
    return None


def _rule_columns(path: Path, values: dict, i: int) -> dict:
    return {"scoring": _scoring(values.get("scoring"), path, f"row {i}: scoring"),
            "options": _options(values.get("options"), path, f"row {i}: options")}


def _long_table(path: Path, df: pd.DataFrame) -> OutcomeRead:
    """A long table: prompt_id, model, score[, cost] and the prompt text (prompt or question)."""
    text = next((c for c in PROMPT_COLUMN_NAMES if c in df.columns), None)
    if text is None:
        raise InputError(path, "prompt", f"a long outcome table needs a prompt or question column (has {list(df.columns)})")
    twice = df.duplicated(["prompt_id", "model"])
    if twice.any():
        i = int(np.flatnonzero(twice)[0])
        raise InputError(path, f"row {i}", f"a second row for model {df['model'].iloc[i]!r} on prompt_id "
                                           f"{df['prompt_id'].iloc[i]!r}: one row per prompt and model")
    out = []
    for pid, rows in df.groupby("prompt_id", sort=False):
        scores = {str(m): _score(v, path, f"row {i}: score") for i, m, v in zip(rows.index, rows["model"], rows["score"])}
        costs = ({str(m): _cost(c, path, f"row {i}: cost") for i, m, c in zip(rows.index, rows["model"], rows["cost"])}
                 if "cost" in rows else {})
        first = int(rows.index[0])
        out.append(Outcome(_question(rows[text].iloc[0], path, f"prompt_id {pid}"), scores,
                           {m: c for m, c in costs.items() if c is not None},
                           **_rule_columns(path, rows.iloc[0].to_dict(), first)))
    return OutcomeRead(out, [])


def _wide_table(path: Path, df: pd.DataFrame) -> OutcomeRead:
    """A wide table as public routing benchmarks publish it: a prompt column, one score or correctness
    column per model, optional `<model>|total_cost` (or `<model>_cost`) and response columns (ignored), a
    row index (dropped with a note), and the prompt's own `scoring` / `options`."""
    text = next((c for c in PROMPT_COLUMN_NAMES if c in df.columns), None)
    if text is None:
        raise InputError(path, "prompt", f"a wide outcome table needs a prompt or question column (has {list(df.columns)})")
    cost_of = {c[: -len(s)]: c for c in df.columns for s in COST_SUFFIXES if c.endswith(s)}
    candidates = [c for c in df.columns if c != text and c not in IGNORED_COLUMNS and c not in PROMPT_RULE_COLUMNS
                  and c not in cost_of.values() and not c.endswith(IGNORED_SUFFIXES)]
    index = {c: why for c in candidates if (why := _index_column(df, c))}
    notes = [f"{path}: column {c!r} is a row index ({why}), not a model: dropped" for c, why in index.items()]
    notes += [f"{path}: column {c!r} names {df[c].nunique()} tasks; all of this file's prompts are one task (split "
              "the file per task to see them apart)" for c in ("eval_name", "task") if c in df and df[c].nunique() > 1]
    models = [c for c in candidates if c not in index]
    if not models:
        raise InputError(path, None, "no model score columns (one numeric or true/false column per model)")
    out = []
    for i, row in enumerate(df.itertuples(index=False)):
        values = dict(zip(df.columns, row))
        costs = {m: _cost(values[c], path, f"row {i}: {c}") for m, c in cost_of.items() if m in models}
        out.append(Outcome(_question(values[text], path, f"row {i}: {text}"),
                           {m: _score(values[m], path, f"row {i}: {m}") for m in models},
                           {m: c for m, c in costs.items() if c is not None}, **_rule_columns(path, values, i)))
    return OutcomeRead(out, notes)


def _table(path: Path) -> OutcomeRead:
    df = _table_rows(path)
    return _long_table(path, df) if {"prompt_id", "model", "score"} <= set(df.columns) else _wide_table(path, df)


READERS = {".json": _routerdc_json, ".csv": _table, ".parquet": _table}


def read_outcomes(source: OutcomeFile) -> OutcomeRead:
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


@dataclass(frozen=True)
class OutcomeTables:
    """The prompt and long quality tables (schemas in traces/README.md), the prompts dropped for a missing
    outcome, each task's scoring rule and answer choices (with where they came from) and notes on the
    data (index columns dropped, constant model columns; routing/data_check.py flags the rest)."""

    prompts: pd.DataFrame
    quality: pd.DataFrame
    dropped: int
    rules: dict[str, TaskRule]
    notes: list[str]


def _constant_columns(read: OutcomeRead, path: Path) -> list[str]:
    """Notes on models whose score is the same on every prompt of a file (a model never or always right,
    or a column that is not a model's scores)."""
    if len(read.outcomes) < 2:
        return []
    notes = []
    for m in read.outcomes[0].scores:
        values = {o.scores.get(m) for o in read.outcomes} - {None}
        if len(values) == 1:
            notes.append(f"{path}: model {m!r} scores {values.pop():g} on every prompt: is it a model's scores?")
    return notes


def outcome_tables(sources: list[OutcomeFile], subject_of: Callable[[str, str], str] | None = None,
                   declared: Declarations | None = None) -> OutcomeTables:
    """The prompt and quality tables from outcome files of any supported format.

    Every file must have the same models; a prompt lacking some model's outcome is dropped (counted).
    prompt_id = task/split/index (index: position in its file); `subject_of(task, question)` may label a
    prompt's subject. A model's cost per prompt, where the data has it, is kept in the `cost` column.
    Each prompt's scoring rule and answer choices: its own (from the data), else its task's declared or
    inferred one (data/scoring.py)."""
    declared = declared or {}
    count_tokens = mistral_token_counter()
    kept: list[tuple[OutcomeFile, int, Outcome]] = []
    experts: list[str] | None = None
    first, dropped, notes = None, 0, []
    for src in sources:
        read = read_outcomes(src)
        notes += read.notes + _constant_columns(read, src.path)
        for i, rec in enumerate(read.outcomes):
            if experts is None:
                experts, first = list(rec.scores), src.path
            elif set(rec.scores) != set(experts):
                diff = sorted(set(rec.scores) ^ set(experts))
                raise InputError(src.path, f"record {i}", f"models differ from those in {first}: {diff}")
            if any(rec.scores[m] is None for m in experts):
                dropped += 1
            else:
                kept.append((src, i, rec))
    if not kept or experts is None:
        raise InputError(sources[0].path if sources else None, None, "no prompt has an outcome for every model")
    tasks = list(dict.fromkeys(src.task for src, _, _ in kept))
    for task, fields in declared.items():
        if task not in tasks:
            by = next(iter(fields.values()))[1]
            raise InputError(by, task, f"no such task in the outcome files (tasks: {', '.join(tasks)})")
    rules = {}
    for task in tasks:
        recs = [rec for src, _, rec in kept if src.task == task]
        scores = np.array([[rec.scores[m] for m in experts] for rec in recs], float)
        rules[task] = task_rule(task, scores, [rec.question for rec in recs], declared.get(task, {}))
    prompts: list[dict] = []
    quality: dict[str, list] = {"prompt_id": [], "expert": [], "score": [], "cost": []}
    for src, i, rec in kept:
        pid = f"{src.task}/{src.split}/{i:04d}"
        rule = rules[src.task]
        prompts.append({"prompt_id": pid, "task": src.task, "split": src.split,
                        "subject": subject_of(src.task, rec.question) if subject_of else "",
                        "scoring": rec.scoring or rule.scoring,
                        "options": rule.options if rec.options is None else rec.options,
                        "prompt_tokens": count_tokens(rec.question), "prompt_bytes": len(rec.question.encode("utf-8")),
                        "question": rec.question})
        quality["prompt_id"] += [pid] * len(experts)
        quality["expert"] += experts
        quality["score"] += [rec.scores[m] for m in experts]
        quality["cost"] += [rec.costs.get(m, np.nan) for m in experts]
    own = sum(rec.scoring is not None or rec.options is not None for _, _, rec in kept)
    if own:
        notes.append(f"{own} prompts carry their own scoring or answer choices in the data (used over their task's)")
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
    return OutcomeTables(p, q, dropped, rules, notes)


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, compression="zstd", index=False)


DATA_FILES = ("prompts.parquet", "quality.parquet", "embeddings.npz")


@dataclass(frozen=True)
class DataFolder:
    """What `moe2sim embed` wrote, and what it inferred, left out or warns about."""

    prompts: int
    models: int
    dim: int
    dropped: int           # prompts without an outcome for every model
    with_cost: bool
    rules: list[str]       # every task's scoring rule and answer choices, with where they came from
    notes: list[str]       # what the reader dropped or found odd in the data
    warnings: list[str]    # what the encoder could not embed faithfully


def write_data_folder(sources: list[OutcomeFile], out: Path, tail_tokens: int | None = None,
                      progress: bool = True, declared: Declarations | None = None) -> DataFolder:
    """`moe2sim embed`: outcome files -> out/{prompts,quality}.parquet and out/embeddings.npz. A folder of
    test files only is a test-only data folder (evaluate a gate trained elsewhere on it)."""
    from moe2sim.data.embeddings import embed_texts, save_embeddings

    if not sources:
        raise InputError("moe2sim embed", "--train/--test", "give at least one outcome file")
    tables = outcome_tables(sources, declared=declared)
    prompts, quality = tables.prompts, tables.quality
    matrix, report = embed_texts(prompts["question"].tolist(), tail_tokens, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    save_embeddings(out / "embeddings.npz", prompts["prompt_id"].to_numpy(), matrix)
    write_parquet_atomic(quality, out / "quality.parquet")
    write_parquet_atomic(prompts, out / "prompts.parquet")
    return DataFolder(len(prompts), quality["expert"].nunique(), int(matrix.shape[1]), tables.dropped,
                      "cost" in quality.columns, [rule.describe(task) for task, rule in tables.rules.items()],
                      tables.notes, report.warnings())
