"""The policy network every trained agent uses, its saved form and the agent that runs it.

Network: Linear-Tanh-Linear-Tanh-Linear, from the flattened observation (the listed keys, in order),
normalised as (x - mean) / std, to one output per action (logits; a Box policy's pre-tanh action).
The trainers (moe2sim.agents.ppo, moe2sim.agents.replay_train) build it with `policy_network` and
save it as an `agent_payload` (a `moe2sim-agent` checkpoint); TorchAgent loads and runs it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from moe2sim.data.checkpoint import load_checkpoint
from moe2sim.errors import InputError

AGENT_FORMAT = "moe2sim-agent"
AGENT_VERSION = 1


def policy_network(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Linear-Tanh-Linear-Tanh-Linear: inputs -> hidden -> hidden -> outputs."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, outputs))


def flat_observation(obs: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """The observation's `keys`, each raveled, concatenated in that order (float32)."""
    return np.concatenate([np.asarray(obs[k], np.float32).ravel() for k in keys])


def agent_payload(state_dict: dict, keys: list[str], mean: np.ndarray, std: np.ndarray, action: str,
                  hidden: int, n_outputs: int, actions: list[int] | None = None) -> dict:
    """The saved agent: a policy_network's weights with its observation keys and normalisation, the env's
    action type, and the actions it may take (all when None)."""
    return {"format": AGENT_FORMAT, "version": AGENT_VERSION, "obs_keys": list(keys), "obs_mean": mean.tolist(),
            "obs_std": std.tolist(), "action": action, "hidden": hidden, "n_outputs": int(n_outputs),
            **({} if actions is None else {"actions": list(actions)}), "state_dict": state_dict}


class TorchAgent:
    """A saved policy network: flattened, normalised observation -> action (greedy, among the payload's
    `actions` if it lists them)."""

    def __init__(self, payload: dict, path: Path | str):
        try:
            self.keys: list[str] = list(payload["obs_keys"])
            self.mean = np.asarray(payload["obs_mean"], np.float32)
            self.std = np.asarray(payload["obs_std"], np.float32)
            self.action_type: str = payload["action"]
            self.net = policy_network(len(self.mean), payload["hidden"], payload["n_outputs"])
            self.net.load_state_dict(payload["state_dict"])
            # the actions it may take (a discrete policy that never holds leaves out action 0); default all
            self.allowed = np.asarray(payload.get("actions", range(payload["n_outputs"])), int)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(path, "state_dict", f"damaged agent file: {type(exc).__name__}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> "TorchAgent":
        return cls(load_checkpoint(path, AGENT_FORMAT, AGENT_VERSION, "train one with examples/train_budget_agent.py"),
                   path)

    def act(self, obs: dict[str, np.ndarray]):
        x = (flat_observation(obs, self.keys) - self.mean) / self.std
        with torch.no_grad():
            out = self.net(torch.as_tensor(x)).numpy()
        if self.action_type == "box":
            return np.tanh(out).astype(np.float32)
        return int(self.allowed[out[self.allowed].argmax()])
