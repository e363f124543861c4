"""RLlib (Ray) for the suite envs: a PPO config whose env runners make the env themselves, and a greedy agent
from the trained RLModule. Needs the `ray` extra (pip install 'moe2sim[ray]'); examples/rllib_ppo.py uses it.

- The env creator, registered with ray.tune's register_env, makes the env in each env runner by its
  module-prefixed id ("moe2sim.envs:moe2sim/<name>": Gymnasium imports moe2sim.envs there, so the id
  resolves in Ray's worker processes) and scales the reward (a day is worth ~10^4; RLlib clips the value
  loss at vf_clip_param = 10).
- The Dict observation goes through RLlib's FlattenObservations connector (env-to-module pipeline): all
  components concatenated in key order, the layout GreedyModule reproduces with the same RLlib function.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.ppo import PPOConfig as RLlibPPOConfig
from ray.rllib.connectors.env_to_module import FlattenObservations
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor
from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space
from ray.tune.registry import register_env

ENV_NAME = "moe2sim-env"  # the name the env creator is registered under with Ray


def env_creator(config: dict[str, Any]) -> gym.Env:
    """Ray's env creator: config {"id": a registered moe2sim id, "reward_scale": the factor on rewards}."""
    env = gym.make(f"moe2sim.envs:{config['id']}")
    scale = float(config["reward_scale"])
    return gym.wrappers.TransformReward(env, lambda r: r * scale)


def flatten_observations(env: gym.Env, spaces: Any, device: Any) -> FlattenObservations:
    """The env-to-module connector: the Dict observation as one flat vector."""
    return FlattenObservations()


def ppo_config(env_id: str, *, env_runners: int = 2, batch: int = 1152, minibatch: int = 288, epochs: int = 5,
               lr: float = 1e-3, hidden: int = 64, reward_scale: float = 0.01, seed: int = 0) -> RLlibPPOConfig:
    """PPO on `env_id` (e.g. "moe2sim/Suite-Outage-v0") with `env_runners` remote env runners of one env each;
    `batch` env steps per training iteration, `epochs` passes over it in minibatches of `minibatch`."""
    register_env(ENV_NAME, env_creator)
    return (RLlibPPOConfig()
            .environment(ENV_NAME, env_config={"id": env_id, "reward_scale": reward_scale})
            .env_runners(num_env_runners=env_runners, num_envs_per_env_runner=1,
                         env_to_module_connector=flatten_observations)
            .training(train_batch_size_per_learner=batch, minibatch_size=minibatch, num_epochs=epochs, lr=lr,
                      gamma=0.99, lambda_=0.95)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[hidden, hidden], vf_share_layers=False))
            .debugging(seed=seed))


class GreedyModule:
    """A trained RLModule as a moe2sim agent: the Dict observation flattened as the connector does, then the
    action of the largest logit."""

    def __init__(self, module: RLModule, observation_space: gym.spaces.Dict):
        self.module = module
        self.struct = get_base_struct_from_space(observation_space)

    def flat(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return flatten_inputs_to_1d_tensor(obs, self.struct, batch_axis=False).astype(np.float32)

    def act(self, obs: dict[str, np.ndarray]) -> int:
        with torch.no_grad():
            out = self.module.forward_inference({Columns.OBS: torch.as_tensor(self.flat(obs)[None])})
        return int(out[Columns.ACTION_DIST_INPUTS][0].argmax())
