"""Agents that set the budgets in BudgetEnv: fixed (the paper's setting), a queue rule, and a
saved torch policy (trained by examples/train_budget_agent.py). All act on the env's observation
dict and return an action of the env's action space. They take the env as gymnasium.make returns
it (wrapped) or bare; wrappers that change the observation (e.g. FlattenObservation) do not fit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import gymnasium as gym
import numpy as np

from moe2sim.data.checkpoint import load_checkpoint
from moe2sim.envs.budget_env import BudgetEnv
from moe2sim.errors import InputError
from moe2sim.selection.budgets import Budgets

AGENT_FORMAT = "moe2sim-agent"
AGENT_VERSION = 1


class Agent(Protocol):
    def act(self, obs: dict[str, np.ndarray]): ...


def budget_env(env: gym.Env) -> BudgetEnv:
    """The BudgetEnv under any wrappers."""
    if not isinstance(env.unwrapped, BudgetEnv):
        raise TypeError(f"agents act on moe2sim's BudgetEnv, got {type(env.unwrapped).__name__}")
    return env.unwrapped


def flatten(obs: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(obs[k], np.float32).ravel() for k in keys])


def nearest_discrete(env: BudgetEnv, box: np.ndarray) -> int:
    """The discrete action whose budgets are closest to a Box action (for discrete envs)."""
    levels = env.cfg.discrete_levels
    grid = np.linspace(-1, 1, levels)
    i = int(np.abs(grid - box[0]).argmin())
    j = int(np.abs(grid - np.mean(box[1:])).argmin())
    return i * levels + j


class FixedBudgets:
    """The scenario's budgets, every window (MoE²'s hand-set budgets)."""

    def __init__(self, env: gym.Env):
        env = budget_env(env)
        box = env.handler.action_for(env.initial_budgets)
        self.action = box if env.cfg.action == "box" else nearest_discrete(env, box)

    def act(self, obs: dict[str, np.ndarray]):
        return self.action


class QueueRule:
    """Tighten the latency budgets as queues grow: scale = 1 - (1 - min_scale) * clip(max queue / q_full, 0, 1)
    times the scenario's budgets, which forces the selector onto faster experts under load; the
    energy budget stays at the scenario's."""

    def __init__(self, env: gym.Env, q_full: float = 3.0, min_scale: float = 0.4):
        env = budget_env(env)
        self.env, self.q_full, self.min_scale = env, q_full, min_scale
        self.base = env.initial_budgets

    def act(self, obs: dict[str, np.ndarray]):
        pressure = float(np.clip(obs["queue"].max() / self.q_full, 0, 1))
        scale = 1 - (1 - self.min_scale) * pressure
        box = self.env.handler.action_for(Budgets(self.base.energy_J, self.base.latency_s * scale))
        return box if self.env.cfg.action == "box" else nearest_discrete(self.env, box)


class TorchAgent:
    """A saved policy network: flattened, normalised observation -> action (greedy)."""

    def __init__(self, payload: dict, path: Path):
        import torch

        self.torch = torch
        try:
            self.keys: list[str] = list(payload["obs_keys"])
            self.mean = np.asarray(payload["obs_mean"], np.float32)
            self.std = np.asarray(payload["obs_std"], np.float32)
            self.action_type: str = payload["action"]
            self.net = torch.nn.Sequential(
                torch.nn.Linear(len(self.mean), payload["hidden"]), torch.nn.Tanh(),
                torch.nn.Linear(payload["hidden"], payload["hidden"]), torch.nn.Tanh(),
                torch.nn.Linear(payload["hidden"], payload["n_outputs"]))
            self.net.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(path, "state_dict", f"damaged agent file: {type(exc).__name__}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> "TorchAgent":
        return cls(load_checkpoint(path, AGENT_FORMAT, AGENT_VERSION, "train one with examples/train_budget_agent.py"),
                   path)

    def act(self, obs: dict[str, np.ndarray]):
        x = (flatten(obs, self.keys) - self.mean) / self.std
        with self.torch.no_grad():
            out = self.net(self.torch.as_tensor(x)).numpy()
        return int(out.argmax()) if self.action_type == "discrete" else np.tanh(out).astype(np.float32)


AGENTS: dict[str, Callable[[BudgetEnv], Agent]] = {"fixed": FixedBudgets, "rule": QueueRule}


def build_agent(name: str, env: gym.Env) -> Agent:
    """A named agent of AGENTS, or the path of a saved agent (.pt)."""
    env = budget_env(env)
    if name in AGENTS:
        return AGENTS[name](env)
    agent = TorchAgent.load(Path(name))
    if agent.action_type != env.cfg.action:
        raise InputError(name, "action", f"the agent was trained for a {agent.action_type} action, the env has "
                                         f"{env.cfg.action} (set --set env.action={agent.action_type})")
    return agent


def run_episode(env: gym.Env, agent: Agent, seed: int) -> tuple[float, list[dict]]:
    """Total reward and per-window log of one episode (stepped through the env's wrappers)."""
    base = budget_env(env)
    obs, info = env.reset(seed=seed)
    total, log, done = 0.0, [], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs))
        total += reward
        done = terminated or truncated
        log.append({"window": base.window, "time_s": base.window * base.cfg.window_s, "reward": reward,
                    "energy_budget_J": info["energy_budget_J"], "arrivals": float(obs["arrival_rate"].sum()),
                    "queue_max": float(obs["queue"].max()), "completed": info["completed"],
                    "correct": info["correct"], "late": info["late"], "energy_J": info["energy_J"],
                    "subset": "|".join(info["subset"]), "infeasible": info["infeasible"],
                    **{f"latency_budget_s[{c.name}]": t for c, t in zip(base.scenario.categories,
                                                                        info["latency_budget_s"])}})
    return total, log
