"""Gym environment speed: steps per second at the default window (5 min of simulated time), for a
single moe2sim/Budget-v0 (Box budgets: the selector solves each new budget pair), a single
moe2sim/Suite-Paper-v0 (subset actions: no solve), and vector envs of 2 (sync and async), random
actions, whole episodes.

    python benchmarks/bench_env.py [--episodes 3] [--no-vector]
"""
from __future__ import annotations

import argparse
import time

import gymnasium as gym

import moe2sim.envs  # noqa: F401  (registers the ids)


def single(env_id: str, episodes: int) -> float:
    env = gym.make(env_id)
    env.action_space.seed(0)
    steps, start = 0, time.perf_counter()
    for ep in range(episodes):
        env.reset(seed=ep)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
            steps += 1
    return steps / (time.perf_counter() - start)


def vector(kind: str, steps: int) -> float:
    make = [lambda: gym.make("moe2sim/Budget-v0") for _ in range(2)]
    # spawn: forking a process that already ran torch can deadlock the child
    envs = gym.vector.SyncVectorEnv(make) if kind == "sync" else gym.vector.AsyncVectorEnv(make, context="spawn")
    envs.action_space.seed(0)
    envs.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    rate = 2 * steps / (time.perf_counter() - start)
    envs.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--no-vector", action="store_true", help="single envs only")
    args = parser.parse_args()
    print("| env | env steps / s |")
    print("|---|---|")
    for env_id in ("moe2sim/Budget-v0", "moe2sim/Suite-Paper-v0"):
        print(f"| single {env_id} ({args.episodes} episodes of 288 windows) | {single(env_id, args.episodes):,.0f} |")
    for kind in () if args.no_vector else ("sync", "async"):
        print(f"| {kind} vector env of 2 (576 vector steps, both envs counted) | {vector(kind, 576):,.0f} |")


if __name__ == "__main__":
    main()
