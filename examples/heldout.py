"""What the training examples share: their flags' checks, the best constant action and the held-out table.

The best constant is searched the way benchmarks/bench_env_suite.py does (every subset action scored on
training days 0, 1, ...; the best mean wins) and scored with the trained agent on held-out days (seeds
1000, 1001, ...), where the table gives means with 95 % Student-t intervals and paired gains (same days).
"""
from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from moe2sim.cli.argtypes import at_least
from moe2sim.envs import SUITE
from moe2sim.agents import Agent, Constant, run_episode
from moe2sim.report.intervals import t_interval

HELD_OUT = 1000  # the first held-out day (seed); training days are seeds below it


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """--env (a suite id), --days (held-out days), --train-days (for the best constant), --seed."""
    p.add_argument("--env", default="moe2sim/Suite-Outage-v0", choices=sorted(SUITE),
                   help="a suite env (subset actions)")
    p.add_argument("--days", type=at_least(1), default=5, help="held-out days (seeds 1000, 1001, ...)")
    p.add_argument("--train-days", type=at_least(1), default=1, help="training days the best constant is searched on")
    p.add_argument("--seed", type=at_least(0), default=0)


def check_days(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The training days the best constant is searched on stay below the held-out ones."""
    if args.train_days > HELD_OUT:
        p.error(f"--train-days {args.train_days}: at most {HELD_OUT} (seeds from {HELD_OUT} on are held out)")


def best_constant(env: gym.Env, train_days: int) -> int:
    """The subset action with the best mean reward over training days 0..train_days-1."""
    return max(range(1, env.action_space.n),
               key=lambda a: np.mean([run_episode(env, Constant(env, a), s)[0] for s in range(train_days)]))


def held_out_table(env: gym.Env, agent: Agent, label: str, days: int, train_days: int) -> str:
    """Markdown: the agent and the best constant action on held-out days, gains paired by day."""
    a = best_constant(env, train_days)
    seeds = range(HELD_OUT, HELD_OUT + days)
    base = np.array([run_episode(env, Constant(env, a), s)[0] for s in seeds])
    mine = np.array([run_episode(env, agent, s)[0] for s in seeds])
    train = "day 0" if train_days == 1 else f"days 0-{train_days - 1}"
    lines = [f"held-out days {seeds.start}-{seeds.stop - 1}; best constant searched on training {train}",
             "", "| agent | mean reward/day ± 95 % CI | vs best constant (paired, ± 95 % CI) | % | days better |",
             "|---|---|---|---|---|"]
    for name, x in [(f"best constant: action {a} ({'|'.join(env.unwrapped.action_table.subsets[a - 1])})", base),
                    (label, mine)]:
        mean, gain = t_interval(x), t_interval(x - base)
        vs = "—" if x is base else f"{gain.mean:+.0f} ± {gain.half_width:.0f}"
        pct = "—" if x is base else f"{100 * gain.mean / abs(base.mean()):+.1f}"
        better = "—" if x is base else f"{int((x > base).sum())}/{days}"
        lines.append(f"| {name} | {mean.mean:.0f} ± {mean.half_width:.0f} | {vs} | {pct} | {better} |")
    return "\n".join(lines)
