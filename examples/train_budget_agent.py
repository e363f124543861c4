"""Train a PPO agent that sets MoE²'s budgets in moe2sim/BudgetDiscrete-v0, then compare it with the
fixed budgets, the queue rule and the best constant action on held-out days.

    python examples/train_budget_agent.py [--episodes 600] [--seed 0] [--out examples/budget_agent.pt]

PPO with the clipped objective and a learned value baseline (moe2sim.agents.ppo.train_ppo, which documents
the two variance reductions that matter here: same-day rollout groups and an input-driven value
baseline). Rollouts run in 2 worker processes (one torch thread each), the updates on 2 threads. The
result is deterministic for a seed. For the suite envs (subset actions) see
benchmarks/bench_env_suite.py and examples/sb3_ppo.py. The saved file is what
moe2sim.agents.TorchAgent.load reads (`moe2sim rollout scenarios/budget_env.yaml --agent <out>
--set env.action=discrete` replays it). Results and what the agent learned: examples/README.md.
"""
import argparse
import functools
import multiprocessing as mp
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import moe2sim.envs  # noqa: F401  (registers the envs)
from moe2sim.agents import Constant, build_agent, run_episode
from moe2sim.agents.ppo import train_ppo
from moe2sim.data.checkpoint import save_checkpoint

ENV_ID = "moe2sim/BudgetDiscrete-v0"
EVAL_SEEDS = range(1000, 1010)
GROUP = 4
BEST_CONSTANT = 12  # one RTX 4090 expert (dolphin-mistral-7b), the best constant action on this scenario


@functools.cache
def worker_env():
    return gym.make(ENV_ID).unwrapped  # one per evaluation process


def evaluate(job):
    """One held-out day of a named agent (greedy); its reward and totals of the window log."""
    name, seed = job
    env = worker_env()
    agent = Constant(env, BEST_CONSTANT) if name == "constant" else build_agent(name, env)
    total, log = run_episode(env, agent, seed)
    return total, {k: sum(w[k] for w in log) for k in ("correct", "late", "energy_J")}, log


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=600, help="training rollouts (days of 288 windows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("examples/budget_agent.pt"))
    args = p.parse_args()
    assert not set(EVAL_SEEDS) & {args.seed * 100_000 + k for k in range(args.episodes // GROUP + 1)}, "overlap"
    torch.set_num_threads(2)
    t0 = time.time()
    save_checkpoint(train_ppo(ENV_ID, episodes=args.episodes, seed=args.seed, workers=2), args.out)
    train_s = time.time() - t0
    names = {"fixed budgets": "fixed", "queue rule": "rule", f"constant action {BEST_CONSTANT}": "constant",
             "PPO agent (greedy)": str(args.out)}  # the agent goes through TorchAgent.load
    with mp.get_context("spawn").Pool(2) as pool:
        res = {label: pool.map(evaluate, [(name, s) for s in EVAL_SEEDS]) for label, name in names.items()}
    print(f"\ntrained on {args.episodes} days in {train_s / 60:.1f} min; held-out days (seeds "
          f"{EVAL_SEEDS.start}-{EVAL_SEEDS.stop - 1}):\n")
    print("| agent | mean reward | std | min | max | correct/day | late/day | energy MJ/day |\n|---|---|---|---|---|---|---|---|")
    for label, runs in res.items():
        r = np.array([run[0] for run in runs])
        tot = {k: np.mean([run[1][k] for run in runs]) for k in ("correct", "late", "energy_J")}
        print(f"| {label} | {r.mean():.0f} | {r.std():.0f} | {r.min():.0f} | {r.max():.0f} | {tot['correct']:.0f} | "
              f"{tot['late']:.0f} | {tot['energy_J'] / 1e6:.2f} |")
    ppo = np.array([run[0] for run in res["PPO agent (greedy)"]])
    for label in list(res)[:3]:
        print(f"\nPPO beats the {label} on {(ppo > [run[0] for run in res[label]]).sum()}/{len(ppo)} days", end="")
    log = res["PPO agent (greedy)"][0][2]
    print(f"\n\nthe agent's subsets over held-out day {EVAL_SEEDS.start} (2-hour blocks):\n\n"
          "| hours | arrivals/s | subsets in force (share of windows, top 2) | energy budget J | reward |\n|---|---|---|---|---|")
    for h in range(0, 24, 2):
        block = log[h * 12:(h + 2) * 12]
        subsets, counts = np.unique([w["subset"] for w in block], return_counts=True)
        top = sorted(zip(counts, subsets), reverse=True)[:2]  # expert names without the -7b/-8b suffix
        mix = ", ".join("+".join(e.rsplit("-", 1)[0] for e in s.split("|")) + f" ({c / len(block):.0%})" for c, s in top)
        print(f"| {h:02d}-{h + 2:02d} | {np.mean([w['arrivals'] for w in block]):.2f} | {mix} | "
              f"{np.mean([w['energy_budget_J'] for w in block]):.0f} | {sum(w['reward'] for w in block):.0f} |")


if __name__ == "__main__":
    main()
