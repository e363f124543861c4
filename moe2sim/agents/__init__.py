"""Agents that set MoE²'s budgets in the Gymnasium environment (moe2sim.envs), and their trainers.

- rules: fixed budgets, a queue rule, a constant action, site rules (`rules`); the named ones in AGENTS
  (`registry`, with build_agent, which also loads a saved agent); one episode of any agent (`episode`);
- the policy network every trained agent uses, its saved form and TorchAgent that runs it (`network`);
- trainers, each returning a saved agent: PPO on the env (`ppo`), policy gradient in a replay model of
  logged days (`replay`, `replay_train`), and RLlib's PPO (`rllib`, needs the `ray` extra).
"""
from moe2sim.agents.episode import run_episode
from moe2sim.agents.network import AGENT_FORMAT, AGENT_VERSION, TorchAgent
from moe2sim.agents.registry import AGENTS, build_agent
from moe2sim.agents.rules import Agent, Constant, FixedBudgets, QueueRule, SiteRule

__all__ = ["AGENTS", "AGENT_FORMAT", "AGENT_VERSION", "Agent", "Constant", "FixedBudgets", "QueueRule", "SiteRule",
           "TorchAgent", "build_agent", "run_episode"]
