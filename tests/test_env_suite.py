"""Issue 15: the env as standard tools call it (SB3 make_vec_env, clear errors for bad kwargs and
options), the subset action space (every action a distinct feasible decision, 0 = hold), the site
schedule (outages, degradations, latency targets, energy price: validated, simulated, observed,
rewarded), and the suite's rules."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from moe2sim.agents import SiteRule, TorchAgent, run_episode
from moe2sim.agents.network import policy_network
from moe2sim.agents.ppo import OBS_KEYS, clone, obs_stats
from moe2sim.envs import SUITE, BudgetEnv
from moe2sim.errors import InputError
from moe2sim.scenario import load_scenario
from moe2sim.sim.site import SiteSchedule

from conftest import SCENARIOS

W = 6


@pytest.fixture(scope="module")
def subset_env() -> BudgetEnv:
    return BudgetEnv(windows=W, action="subset")


# --- tooling ----------------------------------------------------------------------------------------

def test_sb3_make_vec_env_with_the_string_id():
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns that render_mode='rgb_array' is not offered
        venv = make_vec_env("moe2sim/BudgetDiscrete-v0", n_envs=2, env_kwargs=dict(windows=3), seed=0)
    obs = venv.reset()
    assert obs["queue"].shape == (2, 7)
    for _ in range(3):
        obs, rewards, dones, infos = venv.step(np.array([12, 12]))
    assert dones.all() and np.isfinite(rewards).all()  # truncated after 3 windows, auto-reset
    venv.close()
    assert sb3.__version__


def test_unknown_kwarg_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="windowz") as err:
        gym.make("moe2sim/Budget-v0", windowz=3)
    assert "window_s" in str(err.value)  # and lists what it takes
    with pytest.raises(TypeError, match="overrides"):
        BudgetEnv(overrides="seed=3")


@pytest.mark.parametrize("kwargs,name", [(dict(windows=0), "windows"), (dict(window_s=-1.0), "window_s"),
                                         (dict(action="continuous"), "action")])
def test_bad_kwarg_value_is_a_value_error_naming_it(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BudgetEnv(**kwargs)


def test_reset_options_are_refused_by_name(subset_env):
    with pytest.raises(ValueError, match="budgets"):
        subset_env.reset(seed=0, options={"budgets": 3})
    subset_env.reset(seed=0, options={})  # empty is fine


# --- subset actions ---------------------------------------------------------------------------------

def test_every_subset_action_is_a_distinct_feasible_decision(subset_env):
    table = subset_env.action_table
    assert subset_env.action_space.n == len(table) + 1 >= 5
    assert len(set(table.subsets)) == len(table)  # distinct
    rows = table.rows()
    assert rows[0]["action"] == 0 and "hold" in rows[0]["subset"]
    subset_env.reset(seed=0)
    for a in range(1, subset_env.action_space.n):
        if subset_env.window == W:
            subset_env.reset(seed=0)
        info = subset_env.step(a)[4]
        assert not info["infeasible"] and not info["hold"]
        assert tuple(info["subset"]) == table.subsets[a - 1]
        assert info["energy_budget_J"] == pytest.approx(table.budgets[a - 1].energy_J)


def test_hold_keeps_the_subset_in_force(subset_env):
    subset_env.reset(seed=1)
    _, _, _, _, first = subset_env.step(3)
    obs, _, _, _, held = subset_env.step(0)
    assert held["hold"] and held["subset"] == first["subset"]
    assert obs["subset"].sum() == len(first["subset"])
    np.testing.assert_array_equal(obs["budgets"], subset_env.action_table.boxes[2])


# --- the site ---------------------------------------------------------------------------------------

OUTAGE = ("site={outages: [{expert: dolphin-mistral-7b, start_s: 600, end_s: 1500, down: true}, "
          "{expert: llama3-8b, start_s: 0, end_s: 900, slowdown: 4, power_factor: 0.5}], "
          "latency_targets: [{start_h: 0, end_h: 0.25, value: 0.5}], energy_price: [{start_h: 0, end_h: 0.5, value: 3}]}")


@pytest.mark.parametrize("site,message", [
    ("{outages: [{expert: nobody, start_s: 0, end_s: 10, down: true}]}", "unknown expert"),
    ("{outages: [{expert: llama3-8b, start_s: 10, end_s: 5, down: true}]}", "start_s must be below end_s"),
    ("{outages: [{expert: llama3-8b, start_s: 0, end_s: 5}]}", "slowdown"),
    ("{outages: [{expert: llama3-8b, start_s: 0, end_s: 50, down: true}, "
     "{expert: llama3-8b, start_s: 40, end_s: 60, slowdown: 2}]}", "overlap"),
    ("{energy_price: [{start_h: 5, end_h: 25, value: 1}]}", "less than or equal to 24"),
    ("{latency_targets: [{start_h: 1, end_h: 2, value: 0}]}", "> 0"),
    ("{tarif: []}", "unknown key"),
])
def test_bad_site_is_an_input_error(site, message):
    with pytest.raises(InputError, match=message):
        load_scenario(SCENARIOS / "budget_env.yaml", [f"site={site}"])


def test_site_schedule_is_observed_simulated_and_rewarded():
    env = BudgetEnv(window_s=300.0, windows=6, action="subset", overrides=[OUTAGE])
    sched = SiteSchedule.of(env.scenario)
    names = list(sched.names)
    d, l3 = names.index("dolphin-mistral-7b"), names.index("llama3-8b")
    # actions exist that avoid the down expert and the slow one (the table covers the site's states)
    assert any("dolphin-mistral-7b" not in s and "llama3-8b" not in s and len(s) > 1 for s in env.action_table.subsets)
    only_d = env.action_table.subsets.index(("dolphin-mistral-7b",)) + 1
    obs, _ = env.reset(seed=0)
    speeds, prices, targets = [obs["expert_speed"]], [obs["energy_price"][0]], [obs["latency_target"][0]]
    for _ in range(6):
        obs, *_ = env.step(only_d)
        speeds.append(obs["expert_speed"])
        prices.append(obs["energy_price"][0])
        targets.append(obs["latency_target"][0])
    speeds = np.array(speeds)  # at 0, 300, ..., 1800 s
    assert list(speeds[:, d]) == [1, 1, 0, 0, 0, 1, 1] and list(speeds[:, l3]) == [0.25] * 3 + [1] * 4
    assert prices == [3.0] * 6 + [0.0] and targets == [0.5] * 3 + [1.0] * 4
    queries, legs = env.records()
    # legs reaching the down expert in [600, 1500) start at 1500 at the earliest
    on_d = legs[legs["expert"] == "dolphin-mistral-7b"]
    reach = on_d["start_s"] - on_d["queue_s"]
    waiting = (reach >= 600) & (reach < 1500)
    assert waiting.sum() > 0 and (on_d["start_s"][waiting] >= 1500 - 1e-9).all()


def test_degraded_expert_is_slower_and_draws_power_factor():
    only = ["policy.subset=[llama3-8b]", "policy.k=1"]
    plain = BudgetEnv(window_s=300.0, windows=3, action="subset", overrides=only)
    slow = BudgetEnv(window_s=300.0, windows=3, action="subset", overrides=only + [
        "site={outages: [{expert: llama3-8b, start_s: 0, end_s: 900, slowdown: 4, power_factor: 0.5}]}"])
    legs = []
    for env in (plain, slow):
        assert env.action_table.subsets == (("llama3-8b",),)
        env.reset(seed=0)
        for _ in range(3):
            env.step(1)
        legs.append(env.records()[1])
    p, s = (x[x["expert"] == "llama3-8b"] for x in legs)
    assert len(p) == len(s) > 0
    np.testing.assert_allclose(s["decode_s"].to_numpy(), 4 * p["decode_s"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(s["energy_J"].to_numpy(), 2 * p["energy_J"].to_numpy(), rtol=1e-9)


# --- the suite --------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", sorted(SUITE))
def test_suite_envs_have_subset_actions(env_id):
    env = gym.make(env_id, windows=2)
    assert env.unwrapped.cfg.action == "subset" and env.action_space.n == len(env.unwrapped.action_table) + 1
    env.reset(seed=0)
    env.step(0)


def test_site_rule_avoids_the_down_expert():
    env = BudgetEnv(window_s=300.0, windows=6, action="subset", overrides=[OUTAGE])
    only_d = env.action_table.subsets.index(("dolphin-mistral-7b",)) + 1
    rule = SiteRule(env, ranking=[only_d, *[a for a in range(1, env.action_space.n) if a != only_d]])
    _, log = run_episode(env, rule, seed=0)
    used = [row["subset"] for row in log]
    assert used[:2] == ["dolphin-mistral-7b"] * 2  # up until 600 s
    assert "dolphin-mistral-7b" not in used[2] and "llama3-8b" not in used[2]  # at 600 s one is down, one slow
    assert all("dolphin-mistral-7b" not in s for s in used[3:5])  # down until 1500 s
    assert used[5] == "dolphin-mistral-7b"  # back
    assert [row["experts_down"] for row in log] == [0, 1, 1, 1, 0, 0]  # after each window (at 300 ... 1800 s)
    assert [row["energy_price"] for row in log] == [3.0] * 5 + [0.0]


def test_behaviour_cloning_copies_the_teacher(subset_env):
    """moe2sim.agents.ppo.clone: the policy PPO starts from in the suite benchmark takes the rule's actions."""
    torch.manual_seed(0)
    keys = [k for k in OBS_KEYS if k in subset_env.observation_space.spaces]
    mean, std = obs_stats(subset_env, keys, [0])
    pi = policy_network(len(mean), 16, subset_env.action_space.n)
    ranking = list(range(subset_env.action_space.n - 1, 0, -1))
    assert clone(pi, subset_env, SiteRule(subset_env, ranking), keys, mean, std, [1, 2], steps=200) == 1.0
    agent = TorchAgent({"format": "moe2sim-agent", "version": 1, "obs_keys": keys, "obs_mean": mean.tolist(),
                        "obs_std": std.tolist(), "action": "subset", "hidden": 16,
                        "n_outputs": int(subset_env.action_space.n), "state_dict": pi.state_dict()}, "x.pt")
    obs, _ = subset_env.reset(seed=1)
    assert agent.act(obs) == ranking[0] and isinstance(agent.act(obs), int)
