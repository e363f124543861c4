"""Policy-gradient training in a replay model (moe2sim.agents.replay): model-based RL for subset envs.

A whole simulated day costs seconds, so model-free RL on the env (moe2sim.agents.ppo) gets a few hundred
days in minutes and, on the suite, does not improve on the rule it is cloned from. Here the env is run
only to log every action on the training days (moe2sim.agents.replay.collect_replay); the policy then
trains on those logged days, where a day of a batch of policies costs milliseconds, and the result runs in
the env.

Method: policy gradient over whole days. Each update rolls out `group` sampled days on every fitting
day. A window's own reward is known for every action (the replay logged them all, from the same energy
spent), so its expectation under the policy is differentiated exactly (the advantage of each action
is its reward minus the policy's mean); the rest of the day enters through the action taken (score
function), as its reward-to-go minus the mean over the other rollouts of the same day at the same
window (a valid baseline: the load is the day's, not the policy's). An entropy bonus decays to zero
over the updates. The policy is moe2sim.agents.network's policy_network over the REPLAY_KEYS fields of
the observation, normalised; it never holds (re-choosing the action in force is the same decision).
The last `validation` training days are kept out of the fitting; the weights kept are those of the
update whose greedy policy earns most on them in the model (all of this on training days: the held-out
days are never seen).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from moe2sim.agents.network import agent_payload, policy_network
from moe2sim.agents.replay import REPLAY_KEYS, ReplayModel


@dataclass(frozen=True)
class ReplayPGConfig:
    hidden: int = 32
    group: int = 16           # sampled rollouts of each fitting day per update
    updates: int = 300
    lr: float = 3e-3
    ent_coef: float = 0.02    # decays linearly to 0
    validation: int = 1       # training days kept out of the fitting, to pick the weights
    check_every: int = 10     # updates between greedy checks on the validation days


def train_replay(model: ReplayModel, seed: int = 0, cfg: ReplayPGConfig = ReplayPGConfig(), log=print) -> dict:
    """Train on the model's days; returns the agent payload (moe2sim.agents.network.agent_payload)."""
    if model.days <= cfg.validation:
        raise ValueError(f"{model.days} training day(s): need more than validation={cfg.validation}")
    start = time.time()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    fit, val = model.subset(list(range(model.days - cfg.validation))), model.subset(
        list(range(model.days - cfg.validation, model.days)))
    n_actions = model.reward.shape[1] + 1  # hold (0) and the subset actions
    xs = fit.rollout(lambda x, w: rng.integers(1, n_actions, len(x)), np.arange(fit.days)).obs
    flat = xs.reshape(-1, xs.shape[-1])
    mean, std = flat.mean(0), np.maximum(flat.std(0), 1e-3)
    pi = policy_network(len(mean), cfg.hidden, n_actions)
    opt = torch.optim.Adam(pi.parameters(), lr=cfg.lr)
    hold = torch.zeros(n_actions, dtype=torch.bool)
    hold[0] = True

    def logits(x: np.ndarray):
        return pi(torch.as_tensor((x - mean) / std, dtype=torch.float32)).masked_fill(hold, -torch.inf)

    def sample(x: np.ndarray, w: int) -> np.ndarray:
        with torch.no_grad():
            return torch.multinomial(torch.softmax(logits(x), -1), 1, generator=gen)[:, 0].numpy()

    def greedy(x: np.ndarray, w: int) -> np.ndarray:
        with torch.no_grad():
            return logits(x).argmax(-1).numpy()

    def score(m: ReplayModel) -> float:
        return float(m.rollout(greedy, np.arange(m.days)).rewards.sum(1).mean())

    best = (score(val), {k: v.clone() for k, v in pi.state_dict().items()}, 0)
    days = np.repeat(np.arange(fit.days), cfg.group)
    for u in range(cfg.updates):
        run = fit.rollout(sample, days)
        # the rest of the day after each window, against the other rollouts of the same day (sampled)
        later = np.cumsum(run.rewards[:, ::-1], 1)[:, ::-1] - run.rewards
        g = later.reshape(fit.days, cfg.group, -1)
        adv = (g - (g.sum(1, keepdims=True) - g) / (cfg.group - 1)).reshape(len(days), -1)
        scale = float(np.std(adv + run.rewards - run.every.mean(2))) + 1e-8
        logp = torch.log_softmax(logits(run.obs.reshape(-1, run.obs.shape[-1])), -1)
        p = logp.exp()[:, 1:]
        # this window: every action's reward is known, so its expectation under the policy is differentiated
        # exactly; the rest of the day through the action taken (score function)
        now = torch.as_tensor(run.every.reshape(len(p), -1) / scale, dtype=torch.float32)
        expected_now = (p * (now - (p * now).sum(1, keepdim=True).detach())).sum(1)
        taken = logp.gather(1, torch.as_tensor(run.actions.reshape(-1, 1), dtype=torch.int64))[:, 0]
        entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1).mean()
        loss = (-(expected_now + taken * torch.as_tensor(adv.ravel() / scale, dtype=torch.float32)).mean()
                - cfg.ent_coef * (1 - u / cfg.updates) * entropy)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pi.parameters(), 1.0)
        opt.step()
        if (u + 1) % cfg.check_every == 0 or u + 1 == cfg.updates:
            v = score(val)
            if v > best[0]:
                best = (v, {k: t.clone() for k, t in pi.state_dict().items()}, u + 1)
            log(f"update {u + 1:4d}: sampled days {run.rewards.sum(1).mean():8.0f}, greedy {score(fit):8.0f} "
                f"(fitting days), {v:8.0f} (validation days, in the model), entropy {entropy.item():.2f}, "
                f"{time.time() - start:.0f} s")
    log(f"kept the weights of update {best[2]} (greedy {best[0]:.0f} on the validation days, in the model)")
    return agent_payload(best[1], REPLAY_KEYS, mean, std, "subset", cfg.hidden, n_actions, list(range(1, n_actions)))
