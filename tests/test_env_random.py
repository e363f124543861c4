"""Issue 24: randomized sites (scenario site.random), drawn per episode from the reset's seed; the fixed
suite envs stay as they were."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from moe2sim.envs import SUITE_RANDOM
from moe2sim.errors import InputError
from moe2sim.scenario import load_scenario
from moe2sim.sim.site import draw_site, possible_exclusions

from conftest import SCENARIOS

OUTAGE = "moe2sim/Suite-Outage-Random-v0"
RANDOM_OUTAGES = ("site={random: {outages: [{experts: [llama3-8b, dolphin-llama3-8b], probability: 0.7, "
                  "start_h: [1, 20], duration_h: [2, 10], down_share: 0.5, slowdown: [2, 4]}], "
                  "energy_price: {probability: 0.8, start_h: [6, 18], duration_h: [2, 8], value: [0.5, 3]}, "
                  "demand_scale: [0.7, 1.3]}}")


def schedule(env) -> tuple:
    site = env.unwrapped.site
    return site.down, site.degraded, tuple(site.energy_price.starts), tuple(site.energy_price.values)


@pytest.fixture(scope="module")
def outage_env():
    return gym.make(OUTAGE).unwrapped


def test_same_seed_same_schedule_other_seeds_differ(outage_env):
    drawn = {}
    for seed in range(12):
        outage_env.reset(seed=seed)
        drawn[seed] = schedule(outage_env)
    for seed in (0, 5, 11):
        outage_env.reset(seed=seed)
        assert schedule(outage_env) == drawn[seed]
    assert len(set(drawn.values())) == len(drawn)  # every seed its own day
    assert any(any(d) or any(g) for d, g, *_ in drawn.values())


def test_the_draw_keeps_to_the_stated_distribution():
    sc = load_scenario(SCENARIOS / "suite_outage.yaml", [RANDOM_OUTAGES])
    dist = sc.site.random
    starts, scales, kinds, prices = [], [], set(), []
    for seed in range(200):
        site, scale = draw_site(sc.site, 86_400.0, np.random.default_rng(seed))
        scales.append(scale)
        for o in site.outages:
            assert o.expert in {"llama3-8b", "dolphin-llama3-8b"}
            assert 3600 <= o.start_s <= 20 * 3600 and 2 * 3600 - 1e-6 <= o.end_s - o.start_s <= 10 * 3600 + 1e-6
            assert o.down or 2 <= o.slowdown <= 4
            starts.append(o.start_s)
            kinds.add(o.down)
        prices += [(p.start_h, p.end_h, p.value) for p in site.energy_price]
    assert 0.7 * 2 * 200 * 0.8 < len(starts) < 0.7 * 2 * 200 * 1.2  # P(fail) = 0.7, two experts
    assert kinds == {True, False}
    assert 0.8 * 200 * 0.85 < len(prices) < 0.8 * 200 * 1.15
    assert all(6 <= a <= 18 and a < b <= min(a + 8, 24) and 0.5 <= v <= 3 for a, b, v in prices)
    assert min(scales) >= 0.7 and max(scales) <= 1.3 and np.std(scales) > 0.1
    assert possible_exclusions(dist, tuple(e.name for e in sc.experts)) == [1 << 5, 1 << 6, (1 << 5) | (1 << 6)]


def test_a_randomized_env_simulates_and_observes_the_drawn_day():
    env = gym.make(OUTAGE, windows=4, window_s=1800.0, overrides=[
        "site.random.outages.0.start_h=[0, 0.5]", "site.random.outages.0.probability=1",
        "site.random.outages.0.down_share=1"]).unwrapped
    obs, _ = env.reset(seed=3)
    down = [n for n, periods in enumerate(env.site.down) if periods]
    assert {env.site.names[n] for n in down} == {"dolphin-mistral-7b", "llama3-8b", "dolphin-llama3-8b"}
    seen = []
    for w in range(4):
        obs, reward, *_ = env.step(1)
        np.testing.assert_array_equal(obs["expert_speed"], env.site.speed((w + 1) * 1800.0).astype(np.float32))
        seen.append(obs["expert_speed"][down].min())
        assert np.isfinite(reward)
    assert seen[0] == 0.0  # all three fail within the first half hour, for at least two hours


def test_fixed_suite_envs_draw_nothing():
    env = gym.make("moe2sim/Suite-Outage-v0").unwrapped
    env.reset(seed=0)
    first = schedule(env)
    env.reset(seed=7)
    assert schedule(env) == first and env.site.down[4] == ((36000.0, 64800.0),)


@pytest.mark.parametrize("env_id", sorted(SUITE_RANDOM))
def test_randomized_action_table_avoids_every_drawable_outage(env_id):
    env = gym.make(env_id, windows=2).unwrapped
    dist = env.scenario.site.random
    for mask in possible_exclusions(dist, env.site.names):
        out = {env.site.names[n] for n in range(len(env.site.names)) if mask >> n & 1}
        assert any(not out & set(s) for s in env.action_table.subsets), out


@pytest.mark.parametrize("override,field", [
    ("site.random.outages.0.experts=[nobody]", "nobody"),
    ("site.random.outages.0.start_h=[10, 5]", "start_h"),
    ("site.outages=[{expert: llama3-8b, start_s: 0, end_s: 10, down: true}]", "site.random"),
])
def test_bad_random_site_is_a_clear_error(override, field):
    with pytest.raises(InputError, match=field):
        load_scenario(SCENARIOS / "suite_outage_random.yaml", [override])


PUBLISHING = ("site={outages: [{expert: llama3-8b, start_s: 7200, end_s: 9000, down: true, announced: true}, "
              "{expert: dolphin-llama3-8b, start_s: 3600, end_s: 5400, down: true}], "
              "energy_price: [{start_h: 2, end_h: 3, value: 2}], publish: [energy_price, maintenance]}")


def test_what_the_site_publishes_ahead_is_observed_and_nothing_else():
    from moe2sim.envs import BudgetEnv

    env = BudgetEnv(scenario=SCENARIOS / "suite_outage.yaml", overrides=[PUBLISHING], windows=4, window_s=1800.0)
    assert {"price_ahead", "maintenance_in_h"} <= set(env.observation_space.spaces)
    names = list(env.site.names)
    llama, dolphin = names.index("llama3-8b"), names.index("dolphin-llama3-8b")
    obs, _ = env.reset(seed=0)
    seen = [env.step(1)[0] for _ in range(4)]  # at 0.5, 1, 1.5, 2 h
    assert [o["maintenance_in_h"][llama] for o in seen] == [1.5, 1.0, 0.5, 0.0]  # announced: counts down
    assert all((o["maintenance_in_h"][[n for n in range(len(names)) if n != llama]] == 6).all() for o in seen)
    assert seen[1]["expert_speed"][dolphin] == 0  # the unannounced outage: seen when it happens, never ahead
    np.testing.assert_array_equal(seen[0]["price_ahead"], [0, 2, 0, 0, 0, 0])  # 1.5 h, 2.5 h, ... ahead
    assert all(env.observation_space.contains(o) for o in seen)
    plain = BudgetEnv(scenario=SCENARIOS / "suite_outage.yaml", windows=2)
    assert not {"price_ahead", "maintenance_in_h"} & set(plain.observation_space.spaces)


def test_announced_share_draws_maintenance_windows():
    sc = load_scenario(SCENARIOS / "suite_outage_random.yaml", ["site.random.outages.0.announced_share=0.5"])
    flags = [o.announced for seed in range(100) for o in draw_site(sc.site, 86_400.0, np.random.default_rng(seed))[0].outages]
    assert 0.35 < np.mean(flags) < 0.65
    plain = load_scenario(SCENARIOS / "suite_outage_random.yaml", [])
    assert not any(o.announced for seed in range(50) for o in draw_site(plain.site, 86_400.0,
                                                                        np.random.default_rng(seed))[0].outages)
