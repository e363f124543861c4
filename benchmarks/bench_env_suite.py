"""The environment suite: for each registered suite env, on held-out days, the best constant action
(searched over every action on training days), simple rules, a hindsight bound and trained agents.

    python benchmarks/bench_env_suite.py [--envs Paper Rationing Outage Peak] [--agents replay-pg ppo]
        [--workers 1] [--train-seeds 10] [--eval-seeds 10] [--bound-actions 4] [--replay-updates 300]
        [--eval-start 1000]
        [--minutes 4] [--out benchmarks/suite_out]

Per env (moe2sim/Suite-<name>-v0, subset actions):
- training days (seeds 0, 1, ...): every action is run as a constant on each and logged
  (moe2sim.agents.replay.log_day); held-out days (seeds 1000, 1001, ...) are used only for the table;
- best constant: the action with the best mean reward on the training days, scored on the held-out days;
- rules (moe2sim.agents): `fixed` (the scenario's budgets), `site` (the best-ranked constant whose
  experts all run at full speed now; ranking = the training scores, counted over the windows when the
  whole site is up if it has outages), `site-queue` (the same, switching
  to the fastest such subset while the longest queue is ≥ 3) and `site-pace` (the same as `site`, with
  the energy allowance paced by the share of the expected queries seen);
- hindsight bound: per held-out day, the top `--bound-actions` constants by training score are run; the
  bound picks, per window, one of their windows knowing the realised load, maximising the day's reward
  (the energy-allowance term couples windows: a Lagrangian price on energy, scanned). It assumes a
  window's outcome does not depend on earlier choices (queues carry over in reality), so it is an
  estimate of what perfect foresight of the load earns, not a strict upper bound;
- trained agents (`--agents`), greedy on the held-out days:
  `replay-pg` (default): policy gradient in the replay model of the training days
  (moe2sim.agents.replay_train.train_replay; a quarter of the training days pick the weights);
  `ppo`: PPO on the env (moe2sim.agents.ppo.train_ppo, days seed·100000 + k, `--minutes` of training),
  started as a clone of the best rule on the training days.
Means over the held-out days with 95 % t-intervals; gains are paired (same days) against the best constant.
Writes <out>/suite.json, <out>/<env>-<agent>.pt and prints the markdown table of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

SUITE = ["Paper", "Rationing", "Outage", "Peak"]
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086]  # Student t, 97.5 % quantile, 1..20 degrees of freedom


def env_id(name: str) -> str:
    return f"moe2sim.envs:moe2sim/Suite-{name}-v0"  # resolves in the worker processes too


def init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def episode(job) -> dict:
    """One day of an agent: its reward and, per window, the reward without the allowance term and the energy."""
    from pathlib import Path as P

    import gymnasium as gym

    from moe2sim.agents import Constant, SiteRule, TorchAgent, build_agent

    name, spec, seed = job
    env = ENVS.get(name) or ENVS.setdefault(name, gym.make(env_id(name)).unwrapped)
    kind, arg = spec
    agent = {"constant": lambda: Constant(env, arg), "site": lambda: SiteRule(env, arg),
             "site-pace": lambda: SiteRule(env, arg, pace=True), "fixed": lambda: build_agent("fixed", env),
             "site-queue": lambda: SiteRule(env, arg, busy_queue=3.0),
             "torch": lambda: TorchAgent(arg, P("<trained>"))}[kind]()
    cfg = env.cfg
    obs, _ = env.reset(seed=seed)
    total, cum, sep, energy, done = 0.0, 0.0, [], [], False
    while not done:
        obs, r, terminated, truncated, info = env.step(agent.act(obs))
        used = info["energy_J"] + info.get("after_end", {}).get("energy_J", 0.0)  # the last step: and after the day
        before, cum = cum, cum + used
        over = max(0.0, cum - cfg.energy_allowance_J) - max(0.0, before - cfg.energy_allowance_J)
        sep.append(r + cfg.reward.energy_overshoot_per_kJ * over / 1e3)
        energy.append(used)
        total += r
        done = terminated or truncated
    return {"reward": total, "sep": sep, "energy": energy}


ENVS: dict = {}  # per worker process: the envs it built (a benchmark script, not library code)


def make_teacher(kind: str, env, ranking: list[int]):
    """The rule PPO starts from (the best rule on the training days)."""
    from moe2sim.agents import SiteRule

    return SiteRule(env, ranking, pace=kind == "site-pace", busy_queue=3.0 if kind == "site-queue" else None)


def hindsight(runs: list[dict], allowance_J: float, per_kJ: float) -> float:
    """Best day from per-window choices among the runs (see the module docstring)."""
    r, e = np.array([x["sep"] for x in runs]), np.array([x["energy"] for x in runs])  # (A, W)
    best = -np.inf
    for lam in np.r_[0.0, np.geomspace(1e-6, 2 * per_kJ / 1e3 + 1e-6, 60)]:
        pick = np.argmax(r - lam * e, axis=0)
        cols = np.arange(r.shape[1])
        total_e = e[pick, cols].sum()
        best = max(best, r[pick, cols].sum() - per_kJ * max(0.0, total_e - allowance_J) / 1e3)
    return float(best)


def ci(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95 % t-interval."""
    t = T975[len(x) - 2] if len(x) - 1 <= len(T975) else 1.96
    return float(np.mean(x)), float(t * np.std(x, ddof=1) / np.sqrt(len(x)))


def log_job(job):
    """One training day of a constant action, logged for the replay model (moe2sim.agents.replay.log_day)."""
    import gymnasium as gym

    from moe2sim.agents.replay import log_day

    name, action, seed = job
    env = ENVS.get(name) or ENVS.setdefault(name, gym.make(env_id(name)).unwrapped)
    return log_day(env, action, seed)


def train_replay_agent(name: str, env, model, rule_teacher, args) -> dict:
    from moe2sim.agents.replay_train import ReplayPGConfig, train_replay

    return train_replay(model, seed=0, cfg=ReplayPGConfig(updates=args.replay_updates,
                                                          validation=max(1, model.days // 4)))


def train_ppo_agent(name: str, env, model, rule_teacher, args) -> dict:
    from moe2sim.agents.ppo import PPOConfig, train_ppo

    return train_ppo(env_id(name), minutes=args.minutes, episodes=args.episodes, seed=0, workers=args.workers,
                     teacher=rule_teacher, cfg=PPOConfig(lr=5e-4))


# the trained agents: name -> (row label, trainer(env name, env, replay model of the training days, rule to
# clone, args) -> agent payload)
TRAINERS = {"replay-pg": ("replay-PG agent", train_replay_agent), "ppo": ("PPO agent", train_ppo_agent)}


def bench_env(name: str, pool, args, out: Path) -> dict:
    import gymnasium as gym

    from moe2sim.data.checkpoint import save_checkpoint
    from moe2sim.agents.replay import collect_replay

    t0 = time.time()
    env = gym.make(env_id(name)).unwrapped
    n = env.action_space.n
    train, held = list(range(args.train_seeds)), list(range(args.eval_start, args.eval_start + args.eval_seeds))
    model = collect_replay(env, train, lambda jobs: pool.map(log_job, [(name, a, s) for a, s in jobs]))
    score = {a: float(model.totals[:, a - 1].mean()) for a in range(1, n)}
    ranking = sorted(score, key=lambda a: -score[a])
    top = ranking[:args.bound_actions]
    # the rules rank subsets by how they do while the whole site is up (all windows on a site without outages)
    up = np.array([env.site.speed(w * env.cfg.window_s).min() >= 1 for w in range(env.cfg.windows)])
    normal = {a: score[a] if env.site.static else float(model.reward[:, a - 1, up].sum(1).mean())
              for a in range(1, n)}
    rule_ranking = sorted(normal, key=lambda a: -normal[a])
    specs = {f"constant {a}": ("constant", a) for a in top}
    rules = {"fixed budgets": ("fixed", None), "site rule": ("site", rule_ranking),
             "site + queue": ("site-queue", rule_ranking), "site + pacing": ("site-pace", rule_ranking)}
    specs.update(rules)
    jobs = [(name, spec, s) for spec in specs.values() for s in held]
    done = pool.map(episode, jobs)
    runs = {k: done[i * len(held):(i + 1) * len(held)] for i, k in enumerate(specs)}
    bound = np.array([hindsight([runs[f"constant {a}"][i] for a in top], env.cfg.energy_allowance_J,
                                env.cfg.reward.energy_overshoot_per_kJ) for i in range(len(held))])
    print(f"{name}: constants and rules done in {(time.time() - t0) / 60:.1f} min; training", flush=True)
    row = {"env": f"moe2sim/Suite-{name}-v0", "actions": int(n), "best_constant_action": int(ranking[0]),
           "best_constant_subset": "|".join(env.action_table.subsets[ranking[0] - 1]),
           "train_scores": {int(a): float(score[a]) for a in ranking}, "train_seeds": train, "held_out_seeds": held,
           "rule_ranking": rule_ranking, "agents": {}, "training_minutes": {}}
    trained = {}
    for agent in args.agents:
        label, train_agent = TRAINERS[agent]
        t1 = time.time()
        if agent == "ppo":  # PPO starts as a clone of the best rule on the training days
            on_train = pool.map(episode, [(name, spec, s) for spec in list(rules.values())[1:] for s in train])
            rule_score = {k: np.mean([x["reward"] for x in on_train[i * len(train):(i + 1) * len(train)]])
                          for i, k in enumerate(list(rules)[1:])}
            row["ppo_teacher"] = teacher = max(rule_score, key=rule_score.get)
            rule_teacher = (lambda kind: lambda e: make_teacher(kind, e, rule_ranking))(rules[teacher][0])
        else:
            rule_teacher = None
        payload = train_agent(name, env, model, rule_teacher, args)
        row["training_minutes"][label] = (time.time() - t1) / 60
        save_checkpoint(payload, out / f"{name}-{agent}.pt")
        trained[label] = pool.map(episode, [(name, ("torch", payload), s) for s in held])
    rewards = {"best constant": [x["reward"] for x in runs[f"constant {ranking[0]}"]],
               **{k: [x["reward"] for x in runs[k]] for k in rules},
               **{k: [x["reward"] for x in v] for k, v in trained.items()}, "hindsight bound": list(bound)}
    base = np.array(rewards["best constant"])
    for k, v in rewards.items():
        v = np.array(v, float)
        mean, half = ci(v)
        gain, gain_half = ci(v - base)
        row["agents"][k] = {"mean": mean, "ci95": half, "gain": gain, "gain_ci95": gain_half,
                            "gain_pct": 100 * gain / abs(base.mean()), "days_better": int((v > base).sum()),
                            "per_day": v.tolist()}
    row["minutes"] = (time.time() - t0) / 60
    return row


def table(rows: list[dict]) -> str:
    lines = ["| env | agent | mean reward/day ± 95 % CI | vs best constant (paired, ± 95 % CI) | % | days better |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        for k, a in row["agents"].items():
            label = f"{k} ({row['best_constant_subset']})" if k == "best constant" else k
            vs = "—" if k == "best constant" else f"{a['gain']:+.0f} ± {a['gain_ci95']:.0f}"
            pct = "—" if k == "best constant" else f"{a['gain_pct']:+.1f}"
            days = "—" if k == "best constant" else f"{a['days_better']}/{len(a['per_day'])}"
            lines.append(f"| {row['env']} | {label} | {a['mean']:.0f} ± {a['ci95']:.0f} | {vs} | {pct} | {days} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", default=SUITE, choices=SUITE)
    p.add_argument("--agents", nargs="+", default=["replay-pg"], choices=list(TRAINERS),
                   help="trained agents to run")
    p.add_argument("--replay-updates", type=int, default=300, help="replay-PG policy updates")
    p.add_argument("--minutes", type=float, default=4.0, help="PPO training time per env")
    p.add_argument("--episodes", type=int, default=600, help="PPO training days at most (sets the lr schedule)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--train-seeds", type=int, default=10)
    p.add_argument("--eval-seeds", type=int, default=10)
    p.add_argument("--eval-start", type=int, default=1000,
                   help="first held-out day (seed); another range (e.g. 500) is a development set for choices")
    p.add_argument("--bound-actions", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("benchmarks/suite_out"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with mp.get_context("spawn").Pool(args.workers, initializer=init_worker) as pool:
        for name in args.envs:
            rows.append(bench_env(name, pool, args, args.out))
            (args.out / "suite.json").write_text(json.dumps(rows, indent=1))
            print(table(rows[-1:]), flush=True)
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
