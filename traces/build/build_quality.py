"""Build the bundled per-prompt quality tables: traces/prompts.parquet and traces/quality.parquet.

Sources (read-only copies under ../shared/data, see its README.md):

* Per-prompt scores of 7 open 7-8B LLMs on MMLU, GSM8K, ARC-Challenge and HumanEval:
  RouterDC (Chen et al., "RouterDC: Query-Based Router by Dual Contrastive Learning for
  Assembling Large Language Models", NeurIPS 2024), repository shuhao02/RouterDC at commit
  0e63989c5bf4363330b8a4616386e3f7f116d9f8, folder datasets/split2_model7/. That repository
  has no licence file: the scores are shipped as cited measured facts, unchanged.
  A score > 0 means the model answered correctly (probability of the correct option for the
  multiple-choice tasks, fraction of correct samples for GSM8K).
* MMLU subjects: lm-sys/RouteLLM (Apache-2.0) at commit
  0b64fdafe049e596a3f5657c219329f24af24198, routellm/evals/mmlu/responses/mmlu_<subject>.csv.
  A RouterDC question is matched on its text before "\\nA." (white space folded, case
  ignored); a stem shared by several subjects (e.g. "Which of the following is true?") is
  narrowed by comparing the whole question with its options. MMLU itself holds some
  identical questions in more than one subject (clinical_knowledge and college_medicine);
  those get the candidate subjects joined by "|". Anything else unmatched or ambiguous aborts.
* Token counts: Mistral-7B-v0.1 sentencepiece model (tokenizer.model.v1 shipped in the
  mistral-common package, Apache-2.0), len(encode(question)) + 1 for BOS.

Run from the repository root: python traces/build_quality.py [--data DIR]
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

from moe2sim.data.outcomes import OutcomeFile, outcome_tables, write_parquet_atomic

OUT_DIR = Path(__file__).resolve().parents[1]  # traces/
SPLITS = ("train", "test")
FILES: dict[str, tuple[str, str]] = {  # task -> (train file, test file) in data/routerdc
    "mmlu": ("mmlu_train.json", "mmlu_test.json"),
    "gsm8k": ("gsm8k-train.json", "gsm8k-test.json"),
    "arc_challenge": ("arc_challenge_train.json", "arc_challenge_test.json"),
    "humaneval": ("humaneval_train.json", "humaneval_test.json"),
}
# Subject sets known to hold identical questions (same text and options) in MMLU itself.
SHARED = {frozenset({"clinical_knowledge", "college_medicine"})}


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _stem(question: str) -> str:
    return _fold(question.split("\nA.", 1)[0])


def _full(question: str) -> str:
    return _fold(re.sub(r"\s*Answer:\s*$", "", question))


def load_subjects(folder: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Map folded question stem, and folded full question, to the MMLU subjects holding it."""
    by_stem: dict[str, set[str]] = defaultdict(set)
    by_full: dict[str, set[str]] = defaultdict(set)
    files = sorted(folder.glob("mmlu_*.csv"))
    if not files:
        raise SystemExit(f"no mmlu_<subject>.csv files in {folder}")
    for path in files:
        subject = path.stem.removeprefix("mmlu_")
        for prompt in pd.read_csv(path, usecols=["prompt"])["prompt"]:
            by_stem[_stem(prompt)].add(subject)
            by_full[_full(prompt)].add(subject)
    return by_stem, by_full


def subject_of(question: str, by_stem: dict[str, set[str]], by_full: dict[str, set[str]]) -> str:
    cands = set(by_stem.get(_stem(question), ()))
    if len(cands) > 1:  # generic stem: compare the options too
        cands &= by_full.get(_full(question), set())
    if not cands:
        raise ValueError("no matching subject")
    if len(cands) > 1 and frozenset(cands) not in SHARED:
        raise ValueError(f"ambiguous subjects {sorted(cands)}")
    return "|".join(sorted(cands))


def build(data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    by_stem, by_full = load_subjects(data / "routellm_mmlu")
    failures: list[str] = []

    def subject(task: str, question: str) -> str:
        if task != "mmlu":
            return ""
        try:
            return subject_of(question, by_stem, by_full)
        except ValueError as err:
            failures.append(f"{err}: {question[:70]!r}")
            return ""

    sources = [OutcomeFile(task, split, data / "routerdc" / name)
               for task, names in FILES.items() for split, name in zip(SPLITS, names)]
    tables = outcome_tables(sources, subject)
    prompts, quality = tables.prompts, tables.quality
    if failures:
        raise SystemExit(f"{len(failures)} MMLU questions without a unique subject:\n" + "\n".join(failures))
    prompts["subject"] = pd.Categorical(prompts["subject"], categories=sorted(set(prompts["subject"])))
    return prompts, quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data", type=Path, default=OUT_DIR.parent / ".." / "shared" / "data",
                    help="reference data folder (default ../shared/data)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    prompts, quality = build(args.data)
    write_parquet_atomic(prompts, OUT_DIR / "prompts.parquet")
    write_parquet_atomic(quality, OUT_DIR / "quality.parquet")
    dt = time.perf_counter() - t0
    print(f"{len(prompts)} prompts, {len(quality)} quality rows in {dt:.1f} s")


if __name__ == "__main__":
    main()
