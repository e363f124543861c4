"""RLlib PPO on a suite env, on a local Ray instance with two or more env runners.

    python examples/rllib_ppo.py [--env moe2sim/Suite-Outage-v0] [--iterations 50] [--env-runners 2] [--days 5]

Needs the `ray` extra (pip install -e '.[ray]'). The config is moe2sim.agents.rllib.ppo_config: each env runner
makes the env itself by its module-prefixed id "moe2sim.envs:<id>" (from an env creator registered with
ray.tune's register_env) and RLlib's FlattenObservations connector flattens the Dict observation. After
training, the greedy policy and the best constant action (every action scored on the training days) are
scored on held-out days (seeds 1000, 1001, ...); the table is printed in markdown (examples/heldout.py).
"""
from __future__ import annotations

import argparse
import sys
import time

import gymnasium as gym
import torch

from heldout import add_common_flags, check_days, held_out_table
from moe2sim.cli.argtypes import at_least, positive_float


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(p)
    p.add_argument("--iterations", type=at_least(1), default=50, help="training iterations (algo.train() calls)")
    p.add_argument("--env-runners", type=at_least(2), default=2, help="remote env runners (Ray actors)")
    p.add_argument("--batch", type=at_least(1), default=1152, help="env steps per iteration (1152 = 4 days)")
    p.add_argument("--minibatch", type=at_least(1), default=288)
    p.add_argument("--epochs", type=at_least(1), default=5)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--reward-scale", type=positive_float, default=0.01)
    args = p.parse_args(argv)
    check_days(p, args)
    if args.minibatch > args.batch:
        p.error(f"--minibatch {args.minibatch} is larger than --batch {args.batch}")
    return args


def main() -> None:
    args = parse()
    try:
        import ray

        from moe2sim.agents.rllib import GreedyModule, ppo_config
    except ImportError as exc:
        print(f"rllib_ppo.py: error: needs Ray's RLlib: pip install 'moe2sim[ray]' ({exc})", file=sys.stderr)
        raise SystemExit(2) from None
    torch.set_num_threads(1)
    start = time.time()
    ray.init(num_cpus=args.env_runners + 1, include_dashboard=False, log_to_driver=False)  # +1: the learner
    try:
        algo = ppo_config(args.env, env_runners=args.env_runners, batch=args.batch, minibatch=args.minibatch,
                          epochs=args.epochs, lr=args.lr, reward_scale=args.reward_scale, seed=args.seed).build_algo()
        for i in range(args.iterations):
            runners = algo.train()["env_runners"]
            day = runners.get("episode_return_mean", float("nan")) / args.reward_scale
            print(f"iteration {i + 1}: {runners['num_env_steps_sampled_lifetime']:.0f} env steps, "
                  f"mean reward/day of the last sampled days (exploring) {day:.0f}", flush=True)
        module = algo.get_module()
        algo.stop()
    finally:
        ray.shutdown()
    print(f"{args.env}: RLlib PPO trained {args.iterations} iterations on {args.env_runners} env runners "
          f"in {(time.time() - start) / 60:.1f} min")
    env = gym.make(f"moe2sim.envs:{args.env}")
    print(held_out_table(env, GreedyModule(module, env.observation_space), "RLlib PPO (greedy)", args.days,
                         args.train_days))


if __name__ == "__main__":
    main()
