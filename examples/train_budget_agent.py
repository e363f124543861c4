"""Train a PPO agent that sets MoE²'s budgets in moe2sim/BudgetDiscrete-v0, then compare it with the
fixed budgets, the queue rule and the best constant action on held-out days.

    python examples/train_budget_agent.py [--episodes 600] [--seed 0] [--out examples/budget_agent.pt]

PPO with the clipped objective and a learned value baseline. Two variance reductions matter here,
because the gains over a good constant action are ~2% of a day's reward: (1) arrivals are
exogenous (the env draws them from their own stream), so the value net also sees the arrival rate
of the window being scored, and (2) each training day is rolled out GROUP times with the same seed
(same arrivals and prompts) and every advantage is taken relative to the mean of the other rollouts
of that day at the same window. Rollouts run in 2 worker processes (one torch thread each), the
updates on 2 threads. The result is deterministic for a seed. The saved file is what
moe2sim.agents.TorchAgent.load reads (`moe2sim rollout scenarios/budget_env.yaml --agent <out>
--set env.action=discrete` replays it). Results and what the agent learned: examples/README.md.
"""
import argparse
import multiprocessing as mp
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import moe2sim.envs  # noqa: F401  (registers the envs)
from moe2sim.envs.agents import AGENT_FORMAT, AGENT_VERSION, QueueRule, build_agent, flatten, run_episode
from moe2sim.data.checkpoint import save_checkpoint

ENV_ID = "moe2sim/BudgetDiscrete-v0"
OBS_KEYS = ["arrival_rate", "queue", "utilisation", "latency_p50", "latency_p95", "accuracy",
            "energy_spent", "time_of_day", "budgets"]  # arrival_rate first: the value net reuses it
EVAL_SEEDS = range(1000, 1010)
HIDDEN, BATCH, GROUP, EPOCHS, MINIBATCH, LR = 64, 8, 4, 10, 256, 1e-3
GAMMA, LAM, CLIP, ENT_COEF, VF_COEF, REWARD_SCALE = 0.99, 0.95, 0.2, 0.003, 0.5, 0.01
BEST_CONSTANT = 12  # one RTX 4090 expert (dolphin-mistral-7b), the best constant action on this scenario


def mlp(d: int, h: int, out: int) -> nn.Sequential:  # the architecture of moe2sim.agents.TorchAgent
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, out))


def obs_stats(env, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the flattened observation over days of the queue rule and of random actions."""
    xs, rng, rule = [], np.random.default_rng(seeds[0]), QueueRule(env)
    for k, seed in enumerate(seeds):
        obs, _ = env.reset(seed=seed)
        for _ in range(env.cfg.windows):
            obs, *_ = env.step(rule.act(obs) if k % 2 == 0 else int(rng.integers(env.action_space.n)))
            xs.append(flatten(obs, OBS_KEYS))
    return np.mean(xs, 0).astype(np.float32), np.maximum(np.std(xs, 0), 1e-3).astype(np.float32)


def init_worker(mean: np.ndarray, std: np.ndarray) -> None:
    global ENV, PI, MEAN, STD
    torch.set_num_threads(1)
    ENV, MEAN, STD = gym.make(ENV_ID).unwrapped, mean, std
    PI = mlp(len(mean), HIDDEN, ENV.action_space.n)


def rollout(job):
    """One training day with the sampling policy: normalised observations (T+1), actions, log-probs, rewards."""
    state_dict, seed, sample_seed = job
    PI.load_state_dict(state_dict)
    gen = torch.Generator().manual_seed(sample_seed)
    obs, _ = ENV.reset(seed=seed)
    xs, acts, logps, rewards, done = [], [], [], [], False
    while not done:
        xs.append((flatten(obs, OBS_KEYS) - MEAN) / STD)
        with torch.no_grad():
            logp = torch.log_softmax(PI(torch.as_tensor(xs[-1])), -1)
        a = int(torch.multinomial(logp.exp(), 1, generator=gen))
        obs, r, terminated, truncated, _ = ENV.step(a)
        acts.append(a)
        logps.append(float(logp[a]))
        rewards.append(r)
        done = terminated or truncated
    xs.append((flatten(obs, OBS_KEYS) - MEAN) / STD)
    return np.array(xs), np.array(acts), np.array(logps, np.float32), np.array(rewards)


class Constant:
    def act(self, obs):
        return BEST_CONSTANT


def evaluate(job):
    """One held-out day of a named agent (greedy); its reward and totals of the window log."""
    name, seed = job
    agent = Constant() if name == "constant" else build_agent(name, ENV)
    total, log = run_episode(ENV, agent, seed)
    return total, {k: sum(w[k] for w in log) for k in ("correct", "late", "energy_J")}, log


def gae(values: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    adv, last = np.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_v = values[t + 1] if t + 1 < len(rewards) else 0.0  # the day ends: nothing after it
        last = rewards[t] + GAMMA * next_v - values[t] + GAMMA * LAM * last
        adv[t] = last
    return adv


def train(episodes: int, seed: int, out: Path, pool, mean, std, n_actions: int, n_arr: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pi, vf = mlp(len(mean), HIDDEN, n_actions), mlp(len(mean) + n_arr, HIDDEN, 1)
    opt = torch.optim.Adam([*pi.parameters(), *vf.parameters()], lr=LR)
    updates = -(-episodes // BATCH)
    for u in range(updates):
        days = [seed * 100_000 + (u * BATCH + k) // GROUP for k in range(BATCH)]
        batch = pool.map(rollout, [(pi.state_dict(), d, seed * 1_000_003 + u * BATCH + k) for k, d in enumerate(days)])
        x = torch.as_tensor(np.concatenate([b[0][:-1] for b in batch]))
        xv = torch.cat([x, torch.as_tensor(np.concatenate([b[0][1:, :n_arr] for b in batch]))], 1)  # + this window's arrivals
        acts = torch.as_tensor(np.concatenate([b[1] for b in batch]))
        old_logp = torch.as_tensor(np.concatenate([b[2] for b in batch]))
        with torch.no_grad():
            values = vf(xv)[:, 0].numpy().astype(float).reshape(BATCH, -1)
        rewards = np.array([b[3] for b in batch]) * REWARD_SCALE
        adv = np.array([gae(v, r) for v, r in zip(values, rewards)])
        returns = torch.as_tensor((adv + values).ravel(), dtype=torch.float32)
        g = adv.reshape(-1, GROUP, adv.shape[1])  # rollouts of the same day: subtract the others' mean
        adv = torch.as_tensor((g - (g.sum(1, keepdims=True) - g) / (GROUP - 1)).ravel(), dtype=torch.float32)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for group in opt.param_groups:
            group["lr"] = LR * max(1 - u / updates, 0.1)
        for _ in range(EPOCHS):
            perm = torch.randperm(len(acts), generator=gen)
            for i in range(0, len(acts), MINIBATCH):
                idx = perm[i:i + MINIBATCH]
                logp_all = torch.log_softmax(pi(x[idx]), -1)
                ratio = torch.exp(logp_all.gather(1, acts[idx, None])[:, 0] - old_logp[idx])
                policy_loss = -torch.min(ratio * adv[idx], ratio.clamp(1 - CLIP, 1 + CLIP) * adv[idx]).mean()
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                value_loss = ((vf(xv[idx])[:, 0] - returns[idx]) ** 2).mean()
                opt.zero_grad()
                (policy_loss + VF_COEF * value_loss - ENT_COEF * entropy).backward()
                nn.utils.clip_grad_norm_([*pi.parameters(), *vf.parameters()], 0.5)
                opt.step()
        if (u + 1) % 10 == 0 or u + 1 == updates:
            print(f"episodes {(u + 1) * BATCH:4d}: mean training reward {rewards.sum(1).mean() / REWARD_SCALE:8.0f}, "
                  f"policy entropy {entropy.item():.2f}", flush=True)
    save_checkpoint({"format": AGENT_FORMAT, "version": AGENT_VERSION, "obs_keys": OBS_KEYS, "obs_mean": mean.tolist(),
                     "obs_std": std.tolist(), "action": "discrete", "hidden": HIDDEN, "n_outputs": int(n_actions),
                     "state_dict": pi.state_dict()}, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=600, help="training rollouts (days of 288 windows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("examples/budget_agent.pt"))
    args = p.parse_args()
    assert not set(EVAL_SEEDS) & {args.seed * 100_000 + k for k in range(args.episodes // GROUP + 1)}, "overlap"
    torch.set_num_threads(2)
    env = gym.make(ENV_ID).unwrapped
    t0 = time.time()
    mean, std = obs_stats(env, [args.seed * 100_000 + k for k in range(4)])
    with mp.get_context("spawn").Pool(2, initializer=init_worker, initargs=(mean, std)) as pool:
        train(args.episodes, args.seed, args.out, pool, mean, std, env.action_space.n,
              env.observation_space["arrival_rate"].shape[0])
        train_s = time.time() - t0
        names = {"fixed budgets": "fixed", "queue rule": "rule", f"constant action {BEST_CONSTANT}": "constant",
                 "PPO agent (greedy)": str(args.out)}  # the agent goes through TorchAgent.load
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
