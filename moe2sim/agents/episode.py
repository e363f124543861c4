"""One episode of an agent in BudgetEnv: its total reward and a per-window log (moe2sim rollout's
windows.csv)."""
from __future__ import annotations

import gymnasium as gym

from moe2sim.agents.rules import Agent, budget_env_of


def run_episode(env: gym.Env, agent: Agent, seed: int) -> tuple[float, list[dict]]:
    """Total reward and per-window log of one episode (stepped through the env's wrappers)."""
    base = budget_env_of(env)
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
                    "experts_down": int((obs["expert_speed"] == 0).sum()),
                    "experts_slow": int(((obs["expert_speed"] > 0) & (obs["expert_speed"] < 1)).sum()),
                    "latency_target": float(obs["latency_target"][0]), "energy_price": float(obs["energy_price"][0]),
                    **{f"latency_budget_s[{c.name}]": t for c, t in zip(base.scenario.categories,
                                                                        info["latency_budget_s"])}})
    return total, log
