"""Device models around the profiles: what a profile says it is, replay that scales, spread as noise,
experts sharing a device, energy boundaries in the summary."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import MODEL, TRACES, profile_dict, single_expert_raw, sourced
from moe2sim.devices.profiles import Spread, load_profile
from moe2sim.cli import main
from moe2sim.errors import InputError
from moe2sim.devices.service import NoisyService, ProfileService, TraceReplayService
from moe2sim.report.summary import run_summary
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin

PROFILES = sorted((TRACES / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_bundled_profiles_say_what_they_are(path):
    p = load_profile(path)
    assert p.stack is not None and p.quantisation and p.power_mode and p.energy_boundary is not None
    assert p.spread is not None and p.batching is not None and p.batching.max_batch >= 1
    if p.name.endswith("-cpu"):
        assert p.energy_boundary == "none" and p.fit_grid is not None
    elif p.name.startswith("h200"):
        assert (p.stack, p.quantisation, p.energy_boundary) == ("transformers", "bf16", "gpu")
        assert p.fit_grid is not None and p.spread.latency_cv.provenance == "measured"
        assert p.batching.max_power_W.provenance == "measured"  # NVML's enforced limit
    else:
        assert p.energy_boundary == ("module" if "orin" in p.name else "wall")


def test_profile_stacks_for_orin_and_4090():
    stacks = {}
    for path in PROFILES:
        p = load_profile(path)
        stacks.setdefault(p.name.split("-")[0], set()).add(p.stack)
    assert len(stacks["jetson"]) >= 2 and len(stacks["rtx4090"]) >= 2


def test_held_out_shape_replay_is_rescaled(tmp_path):
    """Leave-one-shape-out on the bundled H200 trace: the replayed held-out shape (its nearest shape's
    rows rescaled by the fitted profile) is within 15 % latency / 25 % energy MAPE, far better than
    the nearest shape unscaled (the old replay: ~86 % / ~88 %)."""
    trace = pd.read_csv(TRACES / "devices" / "h200_probe.csv")
    errors = []
    for model, rows in trace[trace["warm"]].groupby("model"):
        for p, o in rows[["prompt_tokens", "output_tokens"]].drop_duplicates().itertuples(index=False):
            is_shape = (trace["prompt_tokens"] == p) & (trace["output_tokens"] == o)
            train = tmp_path / "train.csv"
            trace[(trace["model"] == model) & ~is_shape].to_csv(train, index=False)
            svc = TraceReplayService(train, model)
            n = 2000
            with pytest.warns(UserWarning, match="outside the measured") if p in (64, 1024) or o in (32, 256) \
                    else warnings.catch_warnings():
                s = svc.sample(np.full(n, p), np.full(n, o), np.full(n, "none"), np.random.default_rng(0))
            kept = trace[(trace["model"] == model) & ~is_shape & trace["warm"]]
            shapes = kept[["prompt_tokens", "output_tokens"]].drop_duplicates().to_numpy(float)
            near = shapes[np.argmin(((np.log(shapes) - np.log([p, o])) ** 2).sum(1))]
            nearest = kept[(kept["prompt_tokens"] == near[0]) & (kept["output_tokens"] == near[1])]
            for r in rows[(rows["prompt_tokens"] == p) & (rows["output_tokens"] == o)].itertuples():
                lat, en = r.ttft_s + r.decode_s, r.active_energy_J
                errors.append({
                    "latency": abs((s.ttft_s + s.decode_s).mean() - lat) / lat,
                    "energy": abs(s.active_energy_J.mean() - en) / en,
                    "latency_unscaled": abs((nearest["ttft_s"] + nearest["decode_s"]).mean() - lat) / lat,
                    "energy_unscaled": abs(nearest["active_energy_J"].mean() - en) / en})
    mape = pd.DataFrame(errors).mean() * 100
    assert mape["latency"] < 15 and mape["energy"] < 25, mape.to_dict()
    assert mape["latency"] < mape["latency_unscaled"] / 3 and mape["energy"] < mape["energy_unscaled"] / 3


def test_profile_service_warns_outside_its_fitted_grid():
    svc = ProfileService(load_profile(TRACES / "profiles" / "h200-llama-3.1-8b.yaml"))
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svc.sample(np.array([100, 900]), np.array([40, 200]), np.array(["a", "b"]), rng)  # inside: silent
    with pytest.warns(UserWarning, match="prompt tokens 2048–2048 outside the measured 64–1024"):
        svc.sample(np.array([2048]), np.array([64]), np.array(["a"]), rng)


def test_noise_has_the_profile_spread_and_mean_one():
    profile = load_profile(TRACES / "profiles" / "h200-llama-3.1-8b.yaml")
    spread = Spread(latency_cv=sourced(0.1), power_cv=sourced(0.05))
    base, noisy = ProfileService(profile), NoisyService(ProfileService(profile), spread)
    n = 200_000
    args = (np.full(n, 500), np.full(n, 100), np.full(n, "x"))
    b = base.sample(*args, np.random.default_rng(1))
    s = noisy.sample(*args, np.random.default_rng(1))
    time = (s.ttft_s + s.decode_s) / (b.ttft_s + b.decode_s)
    power = s.active_energy_J / b.active_energy_J / time
    assert time.mean() == pytest.approx(1.0, abs=0.002) and time.std() == pytest.approx(0.1, rel=0.02)
    assert power.mean() == pytest.approx(1.0, abs=0.002) and power.std() == pytest.approx(0.05, rel=0.02)
    np.testing.assert_allclose(s.ttft_s / b.ttft_s, time)  # one factor for the whole request


def two_expert_raw(profile: Path, **expert_fields) -> dict:
    raw = single_expert_raw(profile, {"dist": "fixed", "mean": 1000}, rate=0.5, queries=2000)
    first = raw["experts"][0]
    raw["experts"] = [{**first, "name": "a", **expert_fields}, {**first, "name": "b", **expert_fields}]
    raw["policy"] = {"name": "uniform", "k": 1, "aggregation_s": 0.0}
    return raw


def test_service_noise_is_off_by_default_and_seeded(write_scenario, write_profile, tmp_path):
    raw = profile_dict("noisy")
    raw["spread"] = {"latency_cv": sourced(0.2), "power_cv": sourced(0.1)}
    path = tmp_path / "noisy.yaml"
    path.write_text(yaml.safe_dump(raw))
    scenario = two_expert_raw(path)
    _, _, quiet = Twin.build(load_scenario(write_scenario("q.yaml", base=scenario))).simulate()
    np.testing.assert_allclose(quiet["decode_s"], 1.0)
    scenario["service_noise"] = True
    twin = Twin.build(load_scenario(write_scenario("n.yaml", base=scenario)))
    _, _, noisy = twin.simulate()
    _, _, again = twin.simulate()
    assert noisy["decode_s"].std() == pytest.approx(0.2, rel=0.15)
    np.testing.assert_array_equal(noisy["decode_s"], again["decode_s"])
    scenario["experts"][1]["service_noise"] = False  # per expert overrides the scenario
    _, _, mixed = Twin.build(load_scenario(write_scenario("m.yaml", base=scenario))).simulate()
    assert mixed.loc[mixed["expert"] == "b", "decode_s"].std() < 1e-12


def test_noise_needs_a_spread(write_scenario, write_profile):
    scenario = two_expert_raw(write_profile("plain"))
    scenario["service_noise"] = True
    with pytest.raises(Exception, match="no spread block"):
        Twin.build(load_scenario(write_scenario(base=scenario)))


def test_experts_on_one_device_time_share_it(write_scenario, write_profile):
    """Two experts on one device without a batching block: time sharing, at most slots_a + slots_b
    running; the device's idle power is charged once (split between them)."""
    scenario = two_expert_raw(write_profile("shared", idle_power_W=10.0), device="box")
    scenario["arrivals"]["rate_per_s"] = 1.5
    twin = Twin.build(load_scenario(write_scenario(base=scenario)))
    assert [e.idle_power_W for e in twin.experts] == [5.0, 5.0]
    result, queries, legs = twin.simulate()
    start, end = legs["start_s"].to_numpy(), (legs["start_s"] + legs["ttft_s"] + legs["decode_s"]).to_numpy()
    events = np.r_[start, end]
    order = np.lexsort((np.r_[np.ones(len(start)), -np.ones(len(start))], events))
    running = np.cumsum(np.r_[np.ones(len(start)), -np.ones(len(start))][order])
    assert running.max() == 2
    assert (legs["decode_s"] > 1.0 + 1e-9).mean() > 0.2  # sharing slowed some of them down
    assert legs["decode_s"].max() <= 2.0 + 1e-9          # never below half speed with two running
    summary = run_summary(twin, queries, legs, result.run_s)
    assert summary["energy_J_idle_total"] == pytest.approx(10.0 * summary["run_s"])


def test_summary_flags_mixed_energy_boundaries(write_scenario):
    raw = single_expert_raw(TRACES / "profiles" / "h200-llama-3.1-8b.yaml", {"dist": "fixed", "mean": 64},
                            rate=1.0, queries=200)
    raw["experts"][0]["profile"] = "h200-llama-3.1-8b"
    raw["experts"].append({"name": "orin", "model": MODEL, "profile": "jetson-agx-orin-64gb-7b-q4"})
    raw["categories"][0]["prompt_tokens"] = {"dist": "fixed", "mean": 100}
    twin = Twin.build(load_scenario(write_scenario(base=raw)))
    result, queries, legs = twin.simulate()
    summary = run_summary(twin, queries, legs, result.run_s)
    assert summary["energy_boundaries"] == {"e": "gpu", "orin": "module"}
    assert summary["mixed_boundaries"] is True
    assert "not comparable" in summary["energy_boundary_note"]
    assert summary["experts"]["orin"]["energy_boundary"] == "module"


def test_a_stated_reason_turns_the_boundary_warning_into_a_note(write_scenario):
    """A scenario that says why its boundaries differ gets no warning, and its reason in the summary."""
    raw = single_expert_raw(TRACES / "profiles" / "h200-llama-3.1-8b.yaml", {"dist": "fixed", "mean": 64},
                            rate=1.0, queries=50)
    raw["experts"][0]["profile"] = "h200-llama-3.1-8b"
    raw["experts"].append({"name": "orin", "model": MODEL, "profile": "jetson-agx-orin-64gb-7b-q4"})
    raw["mixed_boundaries"] = "a GPU board meter beside a module meter, on purpose"
    twin = Twin.build(load_scenario(write_scenario(base=raw)))
    result, queries, legs = twin.simulate()
    summary = run_summary(twin, queries, legs, result.run_s)
    assert summary["mixed_boundaries"] is True and summary["energy_boundary_note"] == ""
    assert summary["energy_boundary_reason"].endswith("a GPU board meter beside a module meter, on purpose")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "scenarios").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_bundled_scenarios_use_one_boundary_or_say_why(path):
    """A newcomer's first run prints no boundary warning: every bundled scenario mixes none or states why."""
    scenario = load_scenario(path)
    profiles = [load_profile(bundled) for bundled in (TRACES / "profiles" / f"{e.profile}.yaml"
                                                      for e in scenario.experts)]
    assert len({p.boundary for p in profiles}) == 1 or scenario.mixed_boundaries


@pytest.mark.parametrize("other, field", [("rtx4090-8b-q4", "energy_boundary"),
                                          ("h200-llama-3.2-1b", "batching.power_growth_W")])
def test_experts_on_one_device_must_share_its_physics(write_scenario, capsys, other, field):
    """Two experts on one `device:` whose profiles disagree on the device part are refused with one line
    naming the scenario file and the expert's profile field (exit 2 through the CLI), not silently given
    the first profile's law."""
    raw = single_expert_raw(TRACES / "profiles" / "h200-llama-3.1-8b.yaml", {"dist": "fixed", "mean": 64},
                            rate=1.0, queries=20)
    raw["experts"][0].update(profile="h200-llama-3.1-8b", device="box")
    raw["experts"].append({"name": "other", "model": MODEL, "profile": other, "device": "box"})
    path = write_scenario(base=raw)
    with pytest.raises(InputError, match=rf"experts\.1\.profile: .*{field} = "):
        Twin.build(load_scenario(path))
    code = main(["run", str(path), "--quiet", "--out", str(path.parent / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err and "experts.1.profile" in err
    assert not (path.parent / "out").exists()


def test_experts_on_one_device_with_one_profile_share_it(write_scenario):
    raw = single_expert_raw(TRACES / "profiles" / "h200-llama-3.1-8b.yaml", {"dist": "fixed", "mean": 64},
                            rate=1.0, queries=20)
    raw["experts"][0].update(profile="h200-llama-3.1-8b", device="box")
    raw["experts"].append({"name": "twin", "model": MODEL, "profile": "h200-llama-3.1-8b", "device": "box"})
    twin = Twin.build(load_scenario(write_scenario(base=raw)))
    assert twin.experts[0].law is twin.experts[1].law or twin.experts[0].law == twin.experts[1].law


def test_budget_env_runs_with_shared_devices():
    """Legs in flight on a shared device (decode = inf until done) are neither counted as finished
    nor lost by the window meter."""
    from moe2sim.envs.budget_env import BudgetEnv

    env = BudgetEnv(overrides=[f"experts.{i}.device=orin{i % 2}" for i in range(4)], windows=3)
    env.reset(seed=0)
    for _ in range(3):
        _, reward, _, truncated, _ = env.step(env.action_space.sample())
        assert np.isfinite(reward)
    assert truncated


def test_h200_requests_batched_on_one_gpu_share_its_power(write_scenario):
    """Four requests at once on the H200 8B profile placed on a device: they run together under the
    profile's batching block, so each is charged (P(4) − P_idle) / 4 of active power, not the batch-1
    active power each independent slot would charge; their decode steps barely slow (launch-bound) and
    their prefills together cost one prefill of four times the prompt (past the launch floor)."""
    path = TRACES / "profiles" / "h200-llama-3.1-8b.yaml"
    profile = load_profile(path)
    law = profile.batching
    raw = single_expert_raw(path, {"dist": "fixed", "mean": 128}, rate=1e6, queries=4, slots=4)
    raw["categories"][0]["prompt_tokens"] = {"dist": "fixed", "mean": 512}
    _, _, alone = Twin.build(load_scenario(write_scenario("slots.yaml", base=raw))).simulate()
    raw["experts"][0]["device"] = "h200"
    _, _, shared = Twin.build(load_scenario(write_scenario("device.yaml", base=raw))).simulate()
    p1, idle = profile.decode_power_W.value, profile.idle_power_W.value
    expected = (min(p1 + 3 * law.power_growth_W.value, law.max_power_W.value) - idle) / 4 / (p1 - idle)
    busy = lambda legs: legs["ttft_s"] + legs["decode_s"]  # noqa: E731
    ratio = (shared["energy_J"] / busy(shared)) / (alone["energy_J"] / busy(alone))
    np.testing.assert_allclose(ratio, expected, rtol=0.02)
    np.testing.assert_allclose(shared["decode_s"] / alone["decode_s"], 1 + 3 * law.decode_slowdown.value, rtol=1e-3)
    assert law.prefill_law == "tokens"
    batched = profile.ttft_s(np.array([4 * 512.0]))[0] / profile.ttft_s(np.array([512.0]))[0]
    assert batched > 2  # 2,048 tokens are past the ~20 ms launch floor that hides 512
    np.testing.assert_allclose(shared["ttft_s"] / alone["ttft_s"], batched, rtol=1e-3)


def test_a_freshly_measured_idle_power_moves_the_baseline_not_the_active_energy(write_scenario):
    """`experts.0.idle_power_W` replaces the profile's idle power (the H200's was 121 W one day and 129 W the
    next): idle energy follows it, the phase powers move by the same drift, so active energies are unchanged."""
    path = TRACES / "profiles" / "h200-llama-3.1-8b.yaml"
    raw = single_expert_raw(path, {"dist": "fixed", "mean": 64}, rate=1.0, queries=30)
    raw["experts"][0]["profile"] = "h200-llama-3.1-8b"
    base = Twin.build(load_scenario(write_scenario("base.yaml", base=raw)))
    raw["experts"][0]["idle_power_W"] = 128.8
    fresh = Twin.build(load_scenario(write_scenario("fresh.yaml", base=raw)))
    old, new = base.profiles[0], fresh.profiles[0]
    assert fresh.experts[0].idle_power_W == 128.8 and new.idle_power_W.provenance == "measured"
    assert new.decode_power_W.value - old.decode_power_W.value == pytest.approx(128.8 - old.idle_power_W.value)
    _, _, legs_old = base.simulate()
    _, _, legs_new = fresh.simulate()
    assert np.allclose(legs_new["energy_J"], legs_old["energy_J"])


def test_an_idle_power_above_a_phase_cap_is_refused(write_scenario):
    raw = single_expert_raw(TRACES / "profiles" / "h200-llama-3.1-8b.yaml", {"dist": "fixed", "mean": 64},
                            rate=1.0, queries=5)
    raw["experts"][0]["profile"] = "h200-llama-3.1-8b"
    raw["experts"][0]["idle_power_W"] = 690.0  # phase powers would pass the 700 W cap
    with pytest.raises(InputError, match=r"experts\.0\.idle_power_W"):
        Twin.build(load_scenario(write_scenario(base=raw)))
