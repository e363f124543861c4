"""Issue 15: the end-of-day drain (a backlog left at the episode's end is charged), the replay model of
logged days (moe2sim.agents.replay) and policy-gradient training in it (moe2sim.agents.replay_train)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import moe2sim.envs  # noqa: F401  (registers the ids)
from moe2sim.agents import Constant, TorchAgent, run_episode
from moe2sim.agents.network import policy_network
from moe2sim.agents.replay import REPLAY_KEYS, collect_replay
from moe2sim.agents.replay_train import ReplayPGConfig, train_replay

RATIONING = "moe2sim/Suite-Rationing-v0"


@pytest.fixture(scope="module")
def rationing():
    return gym.make(RATIONING).unwrapped


def test_answers_in_flight_at_the_end_count_in_the_last_reward():
    env = gym.make(RATIONING, windows=4, overrides=["arrivals.mean_rate_per_s=3.0"]).unwrapped  # overloaded
    slowest = int(np.argmax([max(env.twin.policy.selector.problem.delay_of(s.mask)) for s in
                             env.action_table.selections])) + 1
    env.reset(seed=0)
    steps = [env.step(slowest) for _ in range(env.cfg.windows)]
    queries, _ = env.records()
    after = steps[-1][4]["after_end"]
    assert after["completed"] > 0  # a backlog was left ...
    assert sum(s[4]["completed"] for s in steps) + after["completed"] == len(queries)  # ... and counted
    r, allowance = env.cfg.reward, env.cfg.energy_allowance_J  # Rationing: no energy price
    last = steps[-1][4]
    before = sum(s[4]["energy_J"] for s in steps[:-1])
    end = before + last["energy_J"] + after["energy_J"]
    over = max(0.0, end - allowance) - max(0.0, before - allowance)
    assert steps[-1][1] == pytest.approx(
        r.quality * (last["correct"] + after["correct"]) - r.latency_violation * (last["late"] + after["late"])
        - r.energy_overshoot_per_kJ * over / 1e3, rel=1e-9)
    assert "after_end" not in steps[0][4]


def test_replay_of_a_constant_earns_what_the_env_paid(rationing):
    """Outcomes attributed to the arrival window add up to the env's day (Rationing has no energy price),
    and the rebuilt observation shows the subset in force."""
    model = collect_replay(rationing, [0, 1])
    n = model.members.shape[1]
    start = sum(rationing.observation_space[k].shape[0] for k in REPLAY_KEYS[:REPLAY_KEYS.index("subset")])
    for a in range(1, rationing.action_space.n):
        run = model.rollout(lambda x, w: np.full(len(x), a), np.arange(model.days))
        np.testing.assert_allclose(run.rewards.sum(1), model.totals[:, a - 1], rtol=1e-9)
        np.testing.assert_array_equal(run.obs[:, 1:, start:start + n],
                                      np.broadcast_to(model.members[a - 1], (model.days, model.windows - 1, n)))
        np.testing.assert_array_equal(run.every[..., a - 1], run.rewards)


def test_replay_training_beats_the_best_constant_on_held_out_days(rationing):
    """A small budget of replay-PG (3 logged days, 60 updates) beats the untrained policy and the best
    constant of the training days on days it never saw."""
    model = collect_replay(rationing, [0, 1, 2])
    best = int(np.argmax(model.totals.mean(0))) + 1
    cfg = ReplayPGConfig(updates=60, group=8)
    untrained = TorchAgent(train_replay(model, cfg=ReplayPGConfig(updates=0), log=lambda s: None), "x.pt")
    trained = TorchAgent(train_replay(model, cfg=cfg, log=lambda s: None), "x.pt")
    held = [1000, 1001]
    score = {name: sum(run_episode(rationing, agent, s)[0] for s in held)
             for name, agent in [("untrained", untrained), ("trained", trained), ("best", Constant(rationing, best))]}
    assert score["trained"] > score["untrained"]
    assert score["trained"] > 1.03 * score["best"]


def test_torch_agent_acts_only_among_its_actions(rationing):
    n = rationing.action_space.n
    keys = ["time_of_day"]
    net = policy_network(2, 4, n)
    with torch.no_grad():
        net[-1].bias[:] = torch.tensor([100.0] + [0.0] * (n - 1))  # hold would win
    payload = {"obs_keys": keys, "obs_mean": [0.0, 0.0], "obs_std": [1.0, 1.0], "action": "subset", "hidden": 4,
               "n_outputs": n, "state_dict": net.state_dict()}
    obs, _ = rationing.reset(seed=0)
    assert TorchAgent(payload, "x.pt").act(obs) == 0
    assert TorchAgent({**payload, "actions": list(range(1, n))}, "x.pt").act(obs) >= 1
