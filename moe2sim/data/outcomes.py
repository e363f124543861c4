"""Per-query outcome files (RouterDC's JSON shape) -> the prompt and quality tables.

An outcome file is a JSON list of {"question": str, "scores": {model_id: number}}; score > 0
means the model answered correctly. Any model names, any number of models, but the same models
in every record of every file. Prompt lengths are counted with the Mistral-7B-v0.1 tokenizer
(SentencePiece `tokenizer.model.v1` from the `mistral-common` package) plus one BOS token.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import pandas as pd

from moe2sim.data.atomic import atomic_path
from moe2sim.errors import InputError


@dataclass(frozen=True)
class OutcomeFile:
    task: str
    split: str
    path: Path


def read_outcomes(source: OutcomeFile) -> list[dict]:
    """Load and check one outcome file; errors name the file and the record."""
    path = source.path
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "outcome file not found") from None
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
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not rec["question"].strip():
            raise InputError(path, f"[{i}].question", "missing or empty question")
        scores = rec.get("scores")
        if not isinstance(scores, dict) or not scores:
            raise InputError(path, f"[{i}].scores", "missing scores (a mapping model -> score)")
        for model, score in scores.items():
            if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score) or score < 0:
                raise InputError(path, f"[{i}].scores.{model}", f"score must be a number >= 0, got {score!r}")
    return records


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
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prompt table and long quality table (schemas in traces/README.md) from outcome files.

    prompt_id = task/split/index; `subject_of(task, question)` may label a prompt's subject.
    """
    count_tokens = mistral_token_counter()
    prompts: list[dict] = []
    quality: dict[str, list] = {"prompt_id": [], "expert": [], "score": []}
    experts: list[str] | None = None
    first = None
    for src in sources:
        for i, rec in enumerate(read_outcomes(src)):
            models = list(rec["scores"])
            if experts is None:
                experts, first = models, src.path
            elif sorted(models) != sorted(experts):
                diff = sorted(set(models) ^ set(experts))
                raise InputError(src.path, f"[{i}].scores",
                                 f"models differ from those in {first}: {diff}")
            pid = f"{src.task}/{src.split}/{i:04d}"
            q = rec["question"]
            prompts.append({"prompt_id": pid, "task": src.task, "split": src.split,
                            "subject": subject_of(src.task, q) if subject_of else "",
                            "prompt_tokens": count_tokens(q), "prompt_bytes": len(q.encode("utf-8")),
                            "question": q})
            quality["prompt_id"] += [pid] * len(experts)
            quality["expert"] += experts
            quality["score"] += [float(rec["scores"][m]) for m in experts]
    p = pd.DataFrame(prompts)
    for col in ("task", "split", "subject"):
        p[col] = pd.Categorical(p[col], categories=list(dict.fromkeys(p[col])))
    p = p.astype({"prompt_tokens": "int32", "prompt_bytes": "int32"})
    q = pd.DataFrame(quality)
    q["correct"] = q["score"] > 0
    q["expert"] = pd.Categorical(q["expert"], categories=experts)
    q["score"] = q["score"].astype("float32")
    return p, q


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, compression="zstd", index=False)


def write_data_folder(sources: list[OutcomeFile], out: Path, progress: bool = True
                      ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """`moe2sim embed`: outcome files -> out/{prompts,quality}.parquet and out/embeddings.npz."""
    from moe2sim.data.embeddings import embed_texts, save_embeddings

    if not any(s.split == "train" for s in sources) or not any(s.split == "test" for s in sources):
        raise InputError("moe2sim embed", "--train/--test", "give at least one train and one test outcome file")
    prompts, quality = outcome_tables(sources)
    matrix = embed_texts(prompts["question"].tolist(), progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    save_embeddings(out / "embeddings.npz", prompts["prompt_id"].to_numpy(), matrix)
    write_parquet_atomic(quality, out / "quality.parquet")
    write_parquet_atomic(prompts, out / "prompts.parquet")
    return prompts, quality, int(matrix.shape[1])
