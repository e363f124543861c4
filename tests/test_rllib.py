"""Issue 15: RLlib PPO on a suite env, on a real local Ray instance with two env runners (moe2sim.agents.rllib, the
config of examples/rllib_ppo.py). Skipped only where Ray is not installed; CI installs the `ray` extra."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

ray = pytest.importorskip("ray")

ENV = "moe2sim/Suite-Outage-v0"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def local_ray():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ppo_trains_one_iteration_on_two_env_runners(local_ray):
    from moe2sim.agents.rllib import GreedyModule, ppo_config

    algo = ppo_config(ENV, env_runners=2, batch=64, minibatch=32, epochs=1, hidden=16).build_algo()
    try:
        before = {k: v.clone() for k, v in algo.get_module().state_dict().items()}
        result = algo.train()
        # each runner made the env by the module-prefixed id in its own process and stepped it
        stepped = algo.env_runner_group.foreach_env_runner(
            lambda runner: (runner.env.unwrapped.envs[0].unwrapped.window, runner.worker_index),
            local_env_runner=False)
        module = algo.get_module()
    finally:
        algo.stop()
    assert sorted(w for _, w in stepped) == [1, 2]
    assert all(window > 0 for window, _ in stepped)
    assert sum(window for window, _ in stepped) == result["env_runners"]["num_env_steps_sampled"] >= 64
    after = module.state_dict()
    assert any(not np.allclose(before[k], after[k]) for k in before), "the learner's update reached no weights"
    env = gym.make(f"moe2sim.envs:{ENV}")
    agent = GreedyModule(module, env.observation_space)
    obs, _ = env.reset(seed=1000)
    obs, *_ = env.step(env.action_space.n - 1)  # a real observation, past the reset's zeros
    assert module.observation_space.shape == (gym.spaces.flatdim(env.observation_space),)
    np.testing.assert_array_equal(agent.flat(obs), gym.spaces.flatten(env.observation_space, obs))
    assert env.action_space.contains(agent.act(obs))


@pytest.mark.parametrize("flags, message", [
    (["--iterations", "0"], "argument --iterations: must be at least 1, got 0"),
    (["--env-runners", "1"], "argument --env-runners: must be at least 2, got 1"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["--env", "moe2sim/Budget-v0"], "argument --env: invalid choice"),
    (["--minibatch", "600", "--batch", "500"], "--minibatch 600 is larger than --batch 500"),
])
def test_bad_flags_are_one_message_and_exit_2(flags, message, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the example imports examples/heldout.py
    spec = importlib.util.spec_from_file_location("rllib_ppo", EXAMPLES / "rllib_ppo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit) as exit_:
        example.parse(flags)
    assert exit_.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]
