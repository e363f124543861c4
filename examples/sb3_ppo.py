"""Stable-Baselines3 PPO on a suite env, made the way SB3 users make envs: make_vec_env with the string id.

    python examples/sb3_ppo.py [--env moe2sim/Suite-Outage-v0] [--timesteps 60000] [--n-envs 2] [--days 5]

The id is written "moe2sim.envs:<id>" so that it resolves in any process (SubprocVecEnv workers import
nothing of ours otherwise; Gymnasium 1.x loads no plugin entry points). The Dict observation goes to
SB3's MultiInputPolicy as is. After training, the greedy policy and the best constant action (every
action scored on the training days) are scored on held-out days (seeds 1000, 1001, ...); the table is
printed in markdown (examples/heldout.py).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from heldout import add_common_flags, check_days, held_out_table
from moe2sim.cli.argtypes import at_least
from moe2sim.agents.ppo import make_env


class Greedy:
    """The trained SB3 policy's most likely action."""

    def __init__(self, model: PPO):
        self.model = model

    def act(self, obs: dict[str, np.ndarray]) -> int:
        return int(self.model.predict(obs, deterministic=True)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(p)
    p.add_argument("--timesteps", type=at_least(1), default=60_000)
    p.add_argument("--n-envs", type=at_least(1), default=2, help="SubprocVecEnv workers")
    args = p.parse_args()
    check_days(p, args)
    env_id = f"moe2sim.envs:{args.env}"
    torch.set_num_threads(1)
    start = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render_mode.*")  # SB3 asks for rgb_array, the env declines
        venv = make_vec_env(env_id, n_envs=args.n_envs, seed=args.seed, vec_env_cls=SubprocVecEnv,
                            vec_env_kwargs=dict(start_method="spawn"))
    model = PPO("MultiInputPolicy", venv, n_steps=576, batch_size=288, n_epochs=5, learning_rate=1e-3, gamma=0.99,
                seed=args.seed, device="cpu", verbose=0, policy_kwargs=dict(net_arch=[64, 64]))
    model.learn(total_timesteps=args.timesteps)
    venv.close()
    print(f"{args.env}: SB3 PPO trained {model.num_timesteps} steps in {(time.time() - start) / 60:.1f} min")
    print(held_out_table(make_env(env_id, {}), Greedy(model), "SB3 PPO (greedy)", args.days, args.train_days))


if __name__ == "__main__":
    main()
