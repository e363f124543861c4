"""Stable-Baselines3 PPO on a suite env, made the way SB3 users make envs: make_vec_env with the string id.

    python examples/sb3_ppo.py [--env moe2sim/Suite-Outage-v0] [--timesteps 60000] [--n-envs 2] [--days 5]

The id is written "moe2sim.envs:<id>" so that it resolves in any process (SubprocVecEnv workers import
nothing of ours otherwise; Gymnasium 1.x loads no plugin entry points). The Dict observation goes to
SB3's MultiInputPolicy as is. After training, the greedy policy and the best constant action (every
action scored on training day 0) are scored on held-out days (seeds 1000, 1001, ...); the table is
printed in markdown.
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

from moe2sim.envs.agents import Constant, run_episode
from moe2sim.envs.ppo import make_env


class Greedy:
    def __init__(self, model: PPO):
        self.model = model

    def act(self, obs):
        return int(self.model.predict(obs, deterministic=True)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="moe2sim/Suite-Outage-v0")
    p.add_argument("--timesteps", type=int, default=60_000)
    p.add_argument("--n-envs", type=int, default=2)
    p.add_argument("--days", type=int, default=5, help="held-out days")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
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
    train_min = (time.time() - start) / 60
    env = make_env(env_id, {})
    seeds = range(1000, 1000 + args.days)
    a = max(range(1, env.action_space.n), key=lambda a: run_episode(env, Constant(env, a), 0)[0])
    best = f"best constant: action {a} ({'|'.join(env.action_table.subsets[a - 1])})"
    rows = {"SB3 PPO (greedy)": [run_episode(env, Greedy(model), s)[0] for s in seeds],
            best: [run_episode(env, Constant(env, a), s)[0] for s in seeds]}
    print(f"{args.env}: trained {args.timesteps} steps in {train_min:.1f} min; held-out days {seeds.start}-{seeds.stop - 1}")
    print("\n| agent | mean reward/day | std | vs best constant |\n|---|---|---|---|")
    for k, v in rows.items():
        v = np.array(v)
        print(f"| {k} | {v.mean():.0f} | {v.std():.0f} | {100 * (v.mean() / np.mean(rows[best]) - 1):+.1f} % |")


if __name__ == "__main__":
    main()
