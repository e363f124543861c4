"""Scenario schema and loading: validation errors name file and field; --set overrides apply."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PAPER, QUICKSTART, TRACES, quickstart_raw
from moe2sim.errors import InputError
from moe2sim.scenario import Poisson, Scenario, load_scenario
from moe2sim.twin import Twin


@pytest.mark.parametrize("path", [QUICKSTART, PAPER], ids=["quickstart", "paper"])
def test_bundled_scenarios_validate(path: Path):
    scenario = load_scenario(path)
    assert isinstance(scenario, Scenario)
    # data_dir (../traces) is resolved against the scenario file's folder, not the working directory.
    assert scenario.path(scenario.traces.quality) == (TRACES / "quality.parquet").resolve()
    twin = Twin.build(scenario)  # every trace and profile it names resolves
    assert [e.name for e in twin.experts] == [e.name for e in scenario.experts]


def test_quickstart_fields():
    sc = load_scenario(QUICKSTART)
    assert sc.queries == 2000 and sc.duration_s is None
    assert [c.name for c in sc.categories] == ["mmlu", "gsm8k", "arc_challenge", "humaneval"]
    assert isinstance(sc.arrivals, Poisson) and sc.arrivals.rate_per_s == 0.3
    assert sc.policy.name == "gate" and sc.policy.k == 2


def load_raw(write_scenario, raw: dict, overrides=()) -> Scenario:
    return load_scenario(write_scenario(base=raw), overrides)


def expect_error(write_scenario, raw: dict, overrides=()) -> InputError:
    path = write_scenario(base=raw)
    with pytest.raises(InputError) as info:
        load_scenario(path, overrides)
    err = info.value
    if overrides:  # a bad override is named as the flag that brought it
        assert err.file == "--set", "an error from an override must name --set"
    else:
        assert err.file == str(path), "the error must name the scenario file"
        assert str(path) in str(err)
    return err


def test_unknown_top_level_key(write_scenario):
    raw = quickstart_raw()
    raw["duraton_s"] = 10
    err = expect_error(write_scenario, raw)
    assert err.field == "duraton_s"
    assert "unknown key" in err.message


def test_unknown_nested_key(write_scenario):
    raw = quickstart_raw()
    raw["policy"]["kk"] = 3
    err = expect_error(write_scenario, raw)
    assert err.field == "policy.kk"
    assert "unknown key" in err.message


def test_unknown_key_in_list_element(write_scenario):
    raw = quickstart_raw()
    raw["experts"][1]["slot"] = 2
    err = expect_error(write_scenario, raw)
    assert err.field == "experts.1.slot"


def test_unknown_key_via_set_is_rejected(write_scenario):
    """A field an override set is blamed on --set, not on the file (which does not hold it)."""
    with pytest.raises(InputError) as info:
        load_scenario(write_scenario(), ["policy.kk=3"])
    assert info.value.file == "--set" and info.value.field == "policy.kk"


def test_set_by_index_and_by_name(write_scenario):
    sc = load_raw(write_scenario, quickstart_raw(),
                  ["experts.0.slots=2", "categories.gsm8k.latency_budget_s=9", "policy.k=3",
                   "arrivals.rate_per_s=0.5", "seed=11"])
    assert sc.experts[0].slots == 2 and sc.experts[1].slots == 1
    budgets = {c.name: c.latency_budget_s for c in sc.categories}
    assert budgets == {"mmlu": 3.0, "gsm8k": 9.0, "arc_challenge": 3.0, "humaneval": 6.0}
    assert sc.policy.k == 3
    assert sc.arrivals.rate_per_s == 0.5
    assert sc.seed == 11


def test_set_value_parsed_as_yaml(write_scenario):
    sc = load_raw(write_scenario, quickstart_raw(),
                  ["policy.subset=[llama3-8b, mistral-7b]", "categories.1.output_tokens={dist: fixed, mean: 7}"])
    assert sc.policy.subset == ["llama3-8b", "mistral-7b"]
    assert sc.categories[1].output_tokens.dist == "fixed" and sc.categories[1].output_tokens.mean == 7


def test_set_is_applied_before_validation(write_scenario):
    # Switching from queries to duration_s needs both overrides; the result is valid.
    sc = load_raw(write_scenario, quickstart_raw(), ["queries=null", "duration_s=60"])
    assert sc.queries is None and sc.duration_s == 60


@pytest.mark.parametrize("assignment", ["categories.nosuch.mix=1", "experts.7.slots=2", "policy.k"])
def test_bad_set_expressions(write_scenario, assignment):
    with pytest.raises(InputError) as info:
        load_scenario(write_scenario(), [assignment])
    assert info.value.file == "--set"


def test_duration_and_queries_both_set(write_scenario):
    raw = quickstart_raw()
    raw["duration_s"] = 100
    err = expect_error(write_scenario, raw)
    assert "exactly one of duration_s or queries" in err.message


def test_duration_and_queries_neither_set(write_scenario):
    raw = quickstart_raw()
    del raw["queries"]
    err = expect_error(write_scenario, raw)
    assert "exactly one of duration_s or queries" in err.message


def test_k_larger_than_experts(write_scenario):
    raw = quickstart_raw()
    raw["policy"]["k"] = 4
    err = expect_error(write_scenario, raw)
    assert "policy.k" in str(err) and "3 allowed experts" in err.message


def test_k_larger_than_subset(write_scenario):
    raw = quickstart_raw()
    raw["policy"] = {"name": "fixed_subset", "k": 2, "subset": ["llama3-8b"]}
    err = expect_error(write_scenario, raw)
    assert "policy.k" in str(err) and "1 allowed experts" in err.message


def test_subset_names_unknown_expert(write_scenario):
    raw = quickstart_raw()
    raw["policy"] = {"name": "fixed_subset", "k": 1, "subset": ["llama3-8b", "gpt-5"]}
    err = expect_error(write_scenario, raw)
    assert "policy.subset" in str(err) and "gpt-5" in err.message


@pytest.mark.parametrize("rate", [0, -1.5])
def test_non_positive_poisson_rate(write_scenario, rate):
    raw = quickstart_raw()
    raw["arrivals"]["rate_per_s"] = rate
    err = expect_error(write_scenario, raw)
    assert err.field is not None and err.field.startswith("arrivals") and err.field.endswith("rate_per_s")


@pytest.mark.parametrize("rate", [0, -2])
def test_non_positive_diurnal_rate(write_scenario, rate):
    raw = quickstart_raw()
    raw["arrivals"] = {"process": "diurnal", "mean_rate_per_s": rate}
    err = expect_error(write_scenario, raw)
    assert err.field is not None and err.field.endswith("mean_rate_per_s")


def test_unknown_arrival_process(write_scenario):
    raw = quickstart_raw()
    raw["arrivals"] = {"process": "bursty", "rate_per_s": 1}
    err = expect_error(write_scenario, raw)
    assert err.field is not None and err.field.startswith("arrivals")


def test_duplicate_expert_names(write_scenario):
    raw = quickstart_raw()
    raw["experts"][1]["name"] = raw["experts"][0]["name"]
    err = expect_error(write_scenario, raw)
    assert "duplicate experts" in err.message


@pytest.mark.parametrize("field,value", [("experts", []), ("categories", [])])
def test_empty_lists(write_scenario, field, value):
    raw = quickstart_raw()
    raw[field] = value
    err = expect_error(write_scenario, raw)
    assert err.field == field


def test_non_mapping_scenario(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(InputError) as info:
        load_scenario(path)
    assert info.value.file == str(path)


def test_malformed_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nexperts: [\n  {name: a\n")
    with pytest.raises(InputError) as info:
        load_scenario(path)
    assert info.value.file == str(path)
    assert "malformed YAML" in info.value.message
    assert info.value.field is not None and info.value.field.startswith("line ")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_scenario_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    raw = quickstart_raw()
    raw["data_dir"] = "data"
    import yaml

    path = tmp_path / "sub" / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    sc = load_scenario(path)
    assert sc.path("quality.parquet") == (tmp_path / "sub" / "data" / "quality.parquet").resolve()
    assert sc.path(str(TRACES / "x.csv")) == TRACES / "x.csv"
