"""Shared helpers: scenario and profile YAML files written into tmp_path.

Scenarios start from scenarios/quickstart.yaml with `data_dir` pointed at the repository's
traces/ folder (absolute path computed from this file), so a scenario written anywhere under
tmp_path finds the bundled traces and profiles.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "traces"
SCENARIOS = ROOT / "scenarios"
QUICKSTART = SCENARIOS / "quickstart.yaml"
PAPER = SCENARIOS / "paper.yaml"

# A model id that exists in traces/quality.parquet (any works for single-expert set-ups).
MODEL = "mistralai/Mistral-7B-v0.1"


def quickstart_raw() -> dict[str, Any]:
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["data_dir"] = str(TRACES)
    return raw


def sourced(value: float, provenance: str = "assumed", source: str = "test fixture") -> dict[str, Any]:
    return {"value": value, "provenance": provenance, "source": source}


def profile_dict(name: str = "test-profile", *, ttft_base_s: float = 0.0, prefill_tokens_per_s: float = 1e12,
                 decode_tokens_per_s: float = 1000.0, prefill_power_W: float = 20.0,
                 decode_power_W: float = 20.0, idle_power_W: float = 10.0) -> dict[str, Any]:
    return {
        "name": name, "device": "test device", "model": "test model",
        "ttft_base_s": sourced(ttft_base_s),
        "prefill_tokens_per_s": sourced(prefill_tokens_per_s),
        "decode_tokens_per_s": sourced(decode_tokens_per_s),
        "prefill_power_W": sourced(prefill_power_W),
        "decode_power_W": sourced(decode_power_W),
        "idle_power_W": sourced(idle_power_W, "measured", "test fixture meter"),
    }


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[..., Path]:
    """write_scenario(name="scenario.yaml", base=None, **fields) -> path of a scenario YAML.

    Starts from quickstart (or `base`, a raw dict), points data_dir at traces/, and replaces the
    given top-level fields.
    """

    def write(name: str = "scenario.yaml", base: dict[str, Any] | None = None, **fields: Any) -> Path:
        raw = copy.deepcopy(base) if base is not None else quickstart_raw()
        raw.setdefault("data_dir", str(TRACES))
        raw.update(fields)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


@pytest.fixture
def write_profile(tmp_path: Path) -> Callable[..., Path]:
    """write_profile(name="profile", **values) -> path of a device profile YAML (see profile_dict)."""

    def write(name: str = "profile", **values: Any) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(profile_dict(name, **values), sort_keys=False))
        return path

    return write


def single_expert_raw(profile: Path, output_tokens: dict[str, Any], *, rate: float, queries: int,
                      slots: int = 1, seed: int = 1) -> dict[str, Any]:
    """One expert, k=1, fixed_subset, 1-token prompts: a G/G/c queue whose service is output/decode rate."""
    return {
        "name": "queue",
        "seed": seed,
        "data_dir": str(TRACES),
        "queries": queries,
        "experts": [{"name": "e", "model": MODEL, "profile": str(profile), "slots": slots}],
        "categories": [{"name": "mmlu", "mix": 1.0, "latency_budget_s": 10.0,
                        "prompt_tokens": {"dist": "fixed", "mean": 1}, "output_tokens": output_tokens}],
        "energy_budget_J": 1000.0,
        "arrivals": {"process": "poisson", "rate_per_s": rate},
        "policy": {"name": "fixed_subset", "k": 1, "aggregation_s": 0.0},
        "outputs": {"report": False},
    }


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def assert_same_data(built: Any, shipped: Any, where: str, rel: float = 1e-9) -> None:
    """Structures equal, numbers to `rel` (a numpy or pandas update may move a float's last digit), text
    equal once the numbers in it are compared the same way."""
    if isinstance(shipped, dict):
        assert isinstance(built, dict) and list(built) == list(shipped), where
        for key in shipped:
            assert_same_data(built[key], shipped[key], f"{where}.{key}", rel)
    elif isinstance(shipped, list):
        assert isinstance(built, list) and len(built) == len(shipped), where
        for i, (b, s) in enumerate(zip(built, shipped)):
            assert_same_data(b, s, f"{where}[{i}]", rel)
    elif isinstance(shipped, str):
        assert isinstance(built, str) and NUMBER.split(built) == NUMBER.split(shipped), where
        assert_same_data([float(x) for x in NUMBER.findall(built)], [float(x) for x in NUMBER.findall(shipped)],
                         where, rel)
    elif isinstance(shipped, bool) or shipped is None:
        assert built is shipped, where
    else:
        assert built == pytest.approx(shipped, rel=rel, abs=1e-12), where


# The Gymnasium env's shared test set-up (tests/test_envs.py, tests/test_agents.py): two module-scoped envs of
# budget_env.yaml, 12 windows each (building one costs ~1.3 s: traces, gate, selector).
W = 12  # windows of the shared envs' episodes
N_EXPERTS, N_CATS = 7, 4  # of budget_env.yaml
BASE_LATENCY = np.array([3.0, 6.0, 3.0, 6.0])


@pytest.fixture(scope="module")
def box_env():
    from moe2sim.envs import BudgetEnv

    return BudgetEnv(windows=W)


@pytest.fixture(scope="module")
def disc_env():
    from moe2sim.envs import BudgetEnv

    return BudgetEnv(windows=W, action="discrete")
