"""Device profiles: bundled ones load with provenance; fitting recovers known parameters; physics checks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TRACES, assert_same_data, profile_dict
from moe2sim.errors import InputError
from moe2sim.devices.profiles import (DeviceProfile, Sourced, fit_profile, fit_ttft_additive, load_profile, profile_error,
                                      save_profile)

PROFILES = sorted((TRACES / "profiles").glob("*.yaml"))
SOURCED_FIELDS = ["ttft_base_s", "prefill_tokens_per_s", "decode_tokens_per_s",
                  "prefill_power_W", "decode_power_W", "idle_power_W"]


def test_bundled_profiles_exist():
    assert len(PROFILES) >= 8


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_bundled_profile_loads_with_provenance(path: Path):
    profile = load_profile(path)
    assert profile.name == path.stem  # scenarios refer to profiles by file stem
    for f in SOURCED_FIELDS:
        v = getattr(profile, f)
        assert v.provenance in {"measured", "published", "derived", "assumed"}, f
        assert v.source.strip(), f"{path.name}: {f} has an empty source"
    assert profile.decode_power_W.value >= profile.idle_power_W.value
    assert profile.prefill_power_W.value >= profile.idle_power_W.value
    assert profile.decode_tokens_per_s.value > 0 and profile.prefill_tokens_per_s.value > 0


def synthetic_trace(truth: DeviceProfile) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p = rng.integers(16, 4096, 60)
    o = rng.integers(8, 1024, 60)
    ttft = truth.ttft_s(p)
    dec = truth.decode_s(o)
    return pd.DataFrame({"model": "m", "prompt_tokens": p, "output_tokens": o, "ttft_s": ttft,
                         "decode_s": dec, "active_energy_J": truth.active_energy_J(ttft, dec)})


def test_fit_profile_recovers_known_parameters():
    # The fit shares one active power between prefill and decode, so the truth does too.
    truth = DeviceProfile.model_validate(profile_dict(
        "truth", ttft_base_s=0.025, prefill_tokens_per_s=4200.0, decode_tokens_per_s=37.5,
        prefill_power_W=180.0, decode_power_W=180.0, idle_power_W=45.0))
    idle = Sourced(value=45.0, provenance="measured", source="meter")
    fit = fit_profile(synthetic_trace(truth), name="fit", device="d", model="m", idle=idle, how="synthetic")
    assert fit.ttft_base_s.value == pytest.approx(0.025, rel=1e-6)
    assert fit.prefill_tokens_per_s.value == pytest.approx(4200.0, rel=1e-6)
    assert fit.decode_tokens_per_s.value == pytest.approx(37.5, rel=1e-9)
    assert fit.prefill_power_W.value == pytest.approx(180.0, rel=1e-9)
    assert fit.decode_power_W.value == pytest.approx(180.0, rel=1e-9)
    assert fit.idle_power_W == idle
    for f in SOURCED_FIELDS[:-1]:
        assert getattr(fit, f).provenance == "derived" and getattr(fit, f).source == "synthetic"
    assert fit.fit_error["latency_mape_pct"] == pytest.approx(0, abs=1e-4)
    assert fit.fit_error["active_energy_mape_pct"] == pytest.approx(0, abs=1e-4)
    assert fit.fit_error["rows"] == 60


@pytest.mark.parametrize("law", ["additive", "roofline"])
def test_fit_profile_recognises_the_ttft_law(law: str):
    # roofline: a 20 ms launch floor that the prompt's compute (30k tok/s) overtakes beyond 600 tokens.
    truth = DeviceProfile.model_validate({**profile_dict("truth", ttft_base_s=0.02, prefill_tokens_per_s=30_000.0,
                                                         decode_tokens_per_s=50.0), "ttft_law": law})
    idle = Sourced(value=0.0, provenance="assumed", source="none")
    power = Sourced(value=100.0, provenance="assumed", source="none")
    fit = fit_profile(synthetic_trace(truth), name="fit", device="d", model="m", idle=idle, how="synthetic",
                      power=power)
    assert fit.ttft_law == law
    assert fit.ttft_base_s.value == pytest.approx(0.02, rel=0.01)
    assert fit.prefill_tokens_per_s.value == pytest.approx(30_000.0, rel=0.01)
    assert fit.fit_error["ttft_mape_pct"] < 1.0
    # the two laws part beyond the floor: at 4k tokens roofline gives 137 ms, additive 157 ms
    assert fit.ttft_s(np.array([4096.0]))[0] == pytest.approx(truth.ttft_s(np.array([4096.0]))[0], rel=0.01)


def test_bundled_h200_profiles_extrapolate_ttft_beyond_the_launch_floor():
    # The 7-8B H200 rows sit on a ~20 ms floor up to 512 tokens and rise at 1,024: the roofline law fits
    # them, and its 2,048-token TTFT is above the additive law's (which the held-out probe showed 35 % low).
    profile = load_profile(TRACES / "profiles" / "h200-llama-3.1-8b.yaml")
    trace = pd.read_csv(TRACES / "devices" / "h200_probe.csv")
    rows = trace[trace["warm"] & (trace["model"] == "llama-3.1-8b")]
    assert profile.ttft_law == "roofline"
    _, base, inv_rate = fit_ttft_additive(rows["prompt_tokens"].to_numpy(float), rows["ttft_s"].to_numpy(float))
    additive = DeviceProfile.model_validate({**profile.model_dump(), "ttft_law": "additive",
                                             "ttft_base_s": {**profile.ttft_base_s.model_dump(), "value": base},
                                             "prefill_tokens_per_s": {**profile.prefill_tokens_per_s.model_dump(),
                                                                      "value": 1 / inv_rate}})
    assert profile_error(profile, rows)["ttft_mape_pct"] < profile_error(additive, rows)["ttft_mape_pct"]
    assert profile.ttft_s(np.array([2048.0]))[0] > 1.3 * additive.ttft_s(np.array([2048.0]))[0]
    floor = rows.loc[rows["prompt_tokens"] <= 512, "ttft_s"].mean()
    assert profile.ttft_s(np.array([2048.0]))[0] > 2.5 * floor


def test_profile_error_measures_mismatch():
    truth = DeviceProfile.model_validate(profile_dict(decode_tokens_per_s=50.0))
    slow = DeviceProfile.model_validate(profile_dict(decode_tokens_per_s=40.0))
    trace = synthetic_trace(truth)
    assert profile_error(truth, trace)["latency_mape_pct"] == pytest.approx(0, abs=1e-6)
    # decode dominates (1e12 prefill, no base): 50/40 - 1 = 25 % slower.
    assert profile_error(slow, trace)["latency_mape_pct"] == pytest.approx(25.0, abs=0.01)


def test_save_and_load_round_trip(tmp_path):
    truth = DeviceProfile.model_validate(profile_dict("rt", ttft_base_s=0.01, decode_tokens_per_s=33.0))
    path = tmp_path / "rt.yaml"
    save_profile(truth, path)
    assert load_profile(path) == truth


def write(tmp_path, data) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_decode_power_below_idle_is_rejected(tmp_path):
    path = write(tmp_path, profile_dict(decode_power_W=30.0, prefill_power_W=80.0, idle_power_W=40.0))
    with pytest.raises(InputError) as info:
        load_profile(path)
    assert info.value.file == str(path)
    assert "decode_power_W" in info.value.message and "idle_power_W" in info.value.message


def test_prefill_power_below_idle_is_rejected(tmp_path):
    path = write(tmp_path, profile_dict(prefill_power_W=30.0, decode_power_W=80.0, idle_power_W=40.0))
    with pytest.raises(InputError, match="prefill_power_W"):
        load_profile(path)


@pytest.mark.parametrize("field", ["decode_tokens_per_s", "prefill_tokens_per_s"])
def test_zero_rate_is_rejected(tmp_path, field):
    path = write(tmp_path, profile_dict(**{field: 0.0}))
    with pytest.raises(InputError, match=field):
        load_profile(path)


def test_missing_provenance_or_source_is_rejected(tmp_path):
    data = profile_dict()
    del data["decode_tokens_per_s"]["source"]
    with pytest.raises(InputError) as info:
        load_profile(write(tmp_path, data))
    assert info.value.field == "decode_tokens_per_s.source"
    data = profile_dict()
    data["idle_power_W"]["provenance"] = "guessed"
    with pytest.raises(InputError) as info:
        load_profile(write(tmp_path, data))
    assert info.value.field == "idle_power_W.provenance"
    data = profile_dict()
    data["ttft_base_s"]["source"] = ""
    with pytest.raises(InputError):
        load_profile(write(tmp_path, data))


def test_unknown_profile_key_is_rejected(tmp_path):
    data = profile_dict()
    data["decode_tokens_per_sec"] = data.pop("decode_tokens_per_s")
    with pytest.raises(InputError):
        load_profile(write(tmp_path, data))


def test_missing_profile_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_profile(tmp_path / "none.yaml")


def test_h200_build_reproduces_the_shipped_trace_and_profiles(tmp_path):
    """traces/build/build_h200.py on the reference probe writes the bundled H200 trace and profiles,
    batching blocks included: the same rows, fields and text, numbers equal to 1e-9 relative."""
    run = subprocess.run([sys.executable, str(TRACES / "build" / "build_h200.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [str(p) for p in built] == ["devices/h200_probe.csv"] + [f"profiles/{p.name}" for p in
                                                                      sorted((TRACES / "profiles").glob("h200-*.yaml"))]
    trace = "devices/h200_probe.csv"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / trace), pd.read_csv(TRACES / trace), check_exact=False,
                                  rtol=1e-9)
    for p in built[1:]:
        assert_same_data(yaml.safe_load((tmp_path / p).read_text()), yaml.safe_load((TRACES / p).read_text()), str(p))


def test_the_tolerant_comparison_still_catches_a_changed_value():
    shipped = {"a": {"value": 0.01015135064376975, "source": "slope 0.0102 W"}, "b": [1, 2]}
    assert_same_data({"a": {"value": 0.010151350643769748, "source": "slope 0.0102 W"}, "b": [1, 2]}, shipped, "ok")
    for changed in ({"a": {"value": 0.0102, "source": "slope 0.0102 W"}, "b": [1, 2]},
                    {"a": {"value": 0.01015135064376975, "source": "slope 0.0103 W"}, "b": [1, 2]},
                    {"a": {"value": 0.01015135064376975, "source": "slope 0.0102 J"}, "b": [1, 2]},
                    {"a": {"value": 0.01015135064376975, "source": "slope 0.0102 W"}, "b": [1, 2, 3]}):
        with pytest.raises(AssertionError):
            assert_same_data(changed, shipped, "changed")


@pytest.mark.parametrize("field,value", [("decode_slowdown", 1e20), ("decode_slowdown_per_kilotoken", 1e300),
                                         ("prefill_slowdown", 1e20), ("power_growth_W", 1e300)])
def test_a_batching_value_beyond_physics_is_refused_naming_it(tmp_path, field, value):
    """Was: the shared device's fluid model looped until killed (β, κ of 1e20-1e300), or a run exited 0 with
    3e299 J per query (g = 1e300 without a power cap)."""
    raw = profile_dict()
    raw["batching"] = {"max_batch": 4, "decode_slowdown": {"value": 0.1, "provenance": "assumed", "source": "test"},
                       "prefill_slowdown": {"value": 0.1, "provenance": "assumed", "source": "test"},
                       "power_growth_W": {"value": 5.0, "provenance": "assumed", "source": "test"}}
    raw["batching"][field] = {"value": value, "provenance": "assumed", "source": "test"}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=field):
        load_profile(path)
    raw["batching"][field]["value"] = 0.5  # within range: accepted
    path.write_text(yaml.safe_dump(raw))
    assert load_profile(path).batching is not None
