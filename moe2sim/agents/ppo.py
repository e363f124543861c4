"""PPO in torch for a discrete BudgetEnv (the trainer of examples/train_budget_agent.py and of
benchmarks/bench_env_suite.py); the result is a `moe2sim-agent` payload that TorchAgent runs.

Model: clipped PPO (ε = 0.2) with a separate value network of the same shape and GAE (γ = 0.99, λ = 0.95);
the policy is moe2sim.agents.network's policy_network over the flattened, normalised observation (keys
OBS_KEYS present in the env). Two variance reductions, both valid baselines because the load is exogenous
(the env draws it from its own stream): (1) every training day (seed) is rolled out GROUP times and each
advantage is taken relative to the mean of the other rollouts of that day at the same window;
(2) the value network also sees the arrival rate of the window being scored. Rollouts run in worker
processes (one torch thread each); a given seed gives the same weights for the same number of updates.
Optionally the policy starts as a clone of a teacher agent (behaviour cloning on its days, cross-entropy
with label smoothing so that PPO still explores), which PPO then improves: on a few minutes of CPU,
PPO from scratch barely leaves the uniform policy.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import moe2sim.envs  # noqa: F401  (registers the ids in this process: the workers' too)
from moe2sim.agents.network import agent_payload, flat_observation, policy_network

OBS_KEYS = ["arrival_rate", "queue", "utilisation", "latency_p50", "latency_p95", "accuracy", "energy_spent",
            "time_of_day", "budgets", "subset", "expert_speed", "latency_target", "energy_price", "progress"]


@dataclass(frozen=True)
class PPOConfig:
    hidden: int = 64
    batch: int = 8            # rollouts (days) per update
    group: int = 4            # rollouts of the same day
    epochs: int = 10
    minibatch: int = 256
    lr: float = 1e-3
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.003
    vf_coef: float = 0.5
    reward_scale: float = 0.01


def make_env(env_id: str, kwargs: dict) -> gym.Env:
    """The bare env of a registered id."""
    return gym.make(env_id, **kwargs).unwrapped


class RolloutWorker:
    """One process's env and policy copy: rolls out days with the sampling policy."""

    def __init__(self, env_id: str, kwargs: dict, keys: list[str], mean: np.ndarray, std: np.ndarray, hidden: int):
        torch.set_num_threads(1)
        self.env = make_env(env_id, kwargs)
        self.keys, self.mean, self.std = keys, mean, std
        self.pi = policy_network(len(mean), hidden, self.env.action_space.n)

    def x(self, obs) -> np.ndarray:
        return (flat_observation(obs, self.keys) - self.mean) / self.std

    def rollout(self, state_dict, seed: int, sample_seed: int):
        """Normalised observations (T+1), actions, log-probs and rewards of one day."""
        self.pi.load_state_dict(state_dict)
        gen = torch.Generator().manual_seed(sample_seed)
        obs, _ = self.env.reset(seed=seed)
        xs, acts, logps, rewards, done = [], [], [], [], False
        while not done:
            xs.append(self.x(obs))
            with torch.no_grad():
                logp = torch.log_softmax(self.pi(torch.as_tensor(xs[-1])), -1)
            a = int(torch.multinomial(logp.exp(), 1, generator=gen))
            obs, r, terminated, truncated, _ = self.env.step(a)
            acts.append(a)
            logps.append(float(logp[a]))
            rewards.append(r)
            done = terminated or truncated
        xs.append(self.x(obs))
        return np.array(xs, np.float32), np.array(acts), np.array(logps, np.float32), np.array(rewards)


def _serve(conn, *args) -> None:
    worker = RolloutWorker(*args)
    while (jobs := conn.recv()) is not None:
        conn.send([worker.rollout(*job) for job in jobs])


class Workers:
    """Worker processes (spawned: a forked copy of a process that ran torch can deadlock)."""

    def __init__(self, n: int, *args):
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, *args), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def map(self, jobs: list) -> list:
        n = len(self.conns)
        for i, conn in enumerate(self.conns):
            conn.send(jobs[i::n])
        parts = [conn.recv() for conn in self.conns]
        return [parts[i % n][i // n] for i in range(len(jobs))]

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            try:
                conn.send(None)
            except OSError:  # the worker already died (its error is on stderr)
                pass
            proc.join(timeout=10)


def obs_stats(env, keys: list[str], seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the flattened observation over days of uniformly random actions."""
    xs, rng = [], np.random.default_rng(seeds[0])
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            xs.append(flat_observation(obs, keys))
            done = terminated or truncated
    return np.mean(xs, 0).astype(np.float32), np.maximum(np.std(xs, 0), 1e-3).astype(np.float32)


def clone(pi, env, teacher, keys: list[str], mean: np.ndarray, std: np.ndarray, seeds: list[int],
          smoothing: float = 0.1, steps: int = 300) -> float:
    """Fit pi to the teacher's actions on these days (cross-entropy, label smoothing); returns the
    share of the teacher's actions pi then takes greedily."""
    xs, acts = [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            a = int(teacher.act(obs))
            xs.append((flat_observation(obs, keys) - mean) / std)
            acts.append(a)
            obs, _, terminated, truncated, _ = env.step(a)
            done = terminated or truncated
    x, y = torch.as_tensor(np.array(xs, np.float32)), torch.as_tensor(acts)
    opt = torch.optim.Adam(pi.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(pi(x), y).backward()
        opt.step()
    with torch.no_grad():
        return float((pi(x).argmax(-1) == y).float().mean())


def gae(values: np.ndarray, rewards: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    adv, last = np.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_v = values[t + 1] if t + 1 < len(rewards) else 0.0  # the day ends: nothing after it
        last = rewards[t] + gamma * next_v - values[t] + gamma * lam * last
        adv[t] = last
    return adv


def train_ppo(env_id: str, kwargs: dict | None = None, *, episodes: int = 600, minutes: float | None = None,
              seed: int = 0, workers: int = 2, cfg: PPOConfig = PPOConfig(), teacher=None, clone_days: int = 2,
              log=print) -> dict:
    """Train on days seed·100000 + k; stop after `episodes` rollouts or `minutes` of wall time (the
    learning-rate schedule assumes `episodes`). `teacher`: a function env -> agent to clone first (on
    `clone_days` of those days). Returns the agent payload (moe2sim.agents.network.agent_payload)."""
    kwargs = dict(kwargs or {})
    start = time.time()
    env = make_env(env_id, kwargs)
    keys = [k for k in OBS_KEYS if k in env.observation_space.spaces]
    mean, std = obs_stats(env, keys, [seed * 100_000 + k for k in range(2)])
    n_actions, n_arr = env.action_space.n, env.observation_space["arrival_rate"].shape[0]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pi, vf = policy_network(len(mean), cfg.hidden, n_actions), policy_network(len(mean) + n_arr, cfg.hidden, 1)
    if teacher is not None:
        agree = clone(pi, env, teacher(env), keys, mean, std, [seed * 100_000 + k for k in range(clone_days)])
        log(f"{env_id}: cloned the teacher ({agree:.0%} of its actions), {(time.time() - start) / 60:.1f} min")
    opt = torch.optim.Adam([*pi.parameters(), *vf.parameters()], lr=cfg.lr)
    updates = -(-episodes // cfg.batch)
    pool = Workers(workers, env_id, kwargs, keys, mean, std, cfg.hidden)
    try:
        for u in range(updates):
            if minutes is not None and time.time() - start > minutes * 60:
                log(f"stopped at the time limit after {u * cfg.batch} episodes")
                break
            days = [seed * 100_000 + (u * cfg.batch + k) // cfg.group for k in range(cfg.batch)]
            batch = pool.map([(pi.state_dict(), d, seed * 1_000_003 + u * cfg.batch + k) for k, d in enumerate(days)])
            x = torch.as_tensor(np.concatenate([b[0][:-1] for b in batch]))
            # the value net also sees this window's arrivals (the next observation's arrival_rate, first keys)
            xv = torch.cat([x, torch.as_tensor(np.concatenate([b[0][1:, :n_arr] for b in batch]))], 1)
            acts = torch.as_tensor(np.concatenate([b[1] for b in batch]))
            old_logp = torch.as_tensor(np.concatenate([b[2] for b in batch]))
            with torch.no_grad():
                values = vf(xv)[:, 0].numpy().astype(float).reshape(cfg.batch, -1)
            rewards = np.array([b[3] for b in batch]) * cfg.reward_scale
            adv = np.array([gae(v, r, cfg.gamma, cfg.lam) for v, r in zip(values, rewards)])
            returns = torch.as_tensor((adv + values).ravel(), dtype=torch.float32)
            g = adv.reshape(-1, cfg.group, adv.shape[1])  # rollouts of the same day: subtract the others' mean
            adv = torch.as_tensor((g - (g.sum(1, keepdims=True) - g) / (cfg.group - 1)).ravel(), dtype=torch.float32)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * max(1 - u / updates, 0.1)
            for _ in range(cfg.epochs):
                perm = torch.randperm(len(acts), generator=gen)
                for i in range(0, len(acts), cfg.minibatch):
                    idx = perm[i:i + cfg.minibatch]
                    logp_all = torch.log_softmax(pi(x[idx]), -1)
                    ratio = torch.exp(logp_all.gather(1, acts[idx, None])[:, 0] - old_logp[idx])
                    policy_loss = -torch.min(ratio * adv[idx], ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv[idx]).mean()
                    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                    value_loss = ((vf(xv[idx])[:, 0] - returns[idx]) ** 2).mean()
                    opt.zero_grad()
                    (policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy).backward()
                    nn.utils.clip_grad_norm_([*pi.parameters(), *vf.parameters()], 0.5)
                    opt.step()
            if (u + 1) % 5 == 0 or u + 1 == updates:
                log(f"{env_id}: episodes {(u + 1) * cfg.batch:4d}, mean training reward "
                    f"{rewards.sum(1).mean() / cfg.reward_scale:8.0f}, policy entropy {entropy.item():.2f}, "
                    f"{(time.time() - start) / 60:.1f} min")
    finally:
        pool.close()
    return agent_payload(pi.state_dict(), keys, mean, std, env.cfg.action, cfg.hidden, n_actions)
