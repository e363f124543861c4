"""The environment suite as a tool: for each env (a registered suite env or any scenario with an `env`
block), the best constant action, rules, a searched threshold rule and trained agents, against a
hindsight bound, on held-out days and on variants of the site the agents never saw.

    python benchmarks/bench_env_suite.py [--envs Paper Rationing Outage Peak Outage-Random Rationing-Random]
        [--scenario FILE ...] [--agents replay-pg ppo] [--seeds 0 1 2] [--train-days 0-9]
        [--eval-days 1000-1009] [--variant LABEL OVERRIDE ...] [--workers 1] [--bound-actions 4]
        [--replay-updates 300] [--minutes 4] [--out benchmarks/suite_out]

Per env (subset actions; `--scenario FILE` is run with env.action=subset):
- training days (`--train-days`, seeds of reset): every action is run as a constant on each and logged
  (moe2sim.agents.replay.log_day); held-out days (`--eval-days`) are used only for the table;
- best constant: the action with the best mean reward on the training days (moe2sim.agents.baselines);
- rules (moe2sim.agents): `fixed` (the scenario's budgets), `site` (the best-ranked constant whose
  experts all run at full speed now; ranking = the training scores, counted over the windows when the
  whole site is up if it has fixed outages), `site-queue` (the same, switching to the fastest such subset
  while the longest queue is ≥ 3), `site-pace` (the same as `site`, with the energy allowance paced by
  the share of the expected queries seen) and `searched rule`: the best threshold rule on expert speed,
  energy price, energy spent and arrival rate, searched on the training days in their replay model
  (moe2sim.agents.baselines.search_rules);
- hindsight bound: per held-out day, the top `--bound-actions` constants by training score are run; the
  bound picks, per window, one of their windows knowing the realised load (baselines.hindsight_bound: an
  estimate of what foresight earns, not a strict upper bound);
- trained agents (`--agents`), one per training seed (`--seeds`), greedy on the held-out days:
  `replay-pg` (default): policy gradient in the replay model of the training days
  (moe2sim.agents.replay_train.train_replay; a quarter of the training days pick the weights);
  `ppo`: PPO on the env (moe2sim.agents.ppo.train_ppo, days seed·100000 + k, `--minutes` of training),
  started as a clone of the best rule on the training days.
- variants (`--variant LABEL OVERRIDE`, repeatable): the same held-out days with the scenario override
  applied (e.g. a pinned or shifted site.random); every policy above, chosen on the unchanged training
  days, is scored again there. An override must keep the action table (for site.random: the same
  candidate experts).
Means over the held-out days with 95 % t-intervals; gains are paired (same days) against the best constant.
Torch runs single-threaded in this process and in every worker (single_threaded).
Writes <out>/suite.json, <out>/<env>-<agent>-<seed>.pt and prints the markdown table of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

SUITE = ["Paper", "Rationing", "Outage", "Peak", "Outage-Random", "Rationing-Random"]
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086]  # Student t, 97.5 % quantile, 1..20 degrees of freedom

# An env to benchmark: (label, scenario file, overrides); workers build it from this (it pickles).
EnvSpec = tuple[str, str, tuple[str, ...]]


def single_threaded() -> None:
    """One torch thread: in this process (training) and in every worker (the pool's initializer). On a
    shared machine more threads are slower (5.5 s per update against 0.4 s, issue 24) and give the same
    values."""
    import torch

    torch.set_num_threads(1)


def suite_spec(name: str) -> EnvSpec:
    """The registered moe2sim/Suite-<name>-v0 as a spec."""
    from moe2sim.envs import ENV_IDS

    from moe2sim.data.bundled import bundled_path

    return name, str(bundled_path(f"scenarios/{ENV_IDS[f'moe2sim/Suite-{name}-v0']['scenario']}")), ()


def make_env(spec: EnvSpec):
    """The bare env of a spec, built once per process."""
    if spec not in ENVS:
        from moe2sim.envs import BudgetEnv

        ENVS[spec] = BudgetEnv(scenario=spec[1], overrides=list(spec[2]), action="subset")
    return ENVS[spec]


ENVS: dict = {}  # per process: the envs it built (a benchmark script, not library code)


def episode(job) -> dict:
    """One day of an agent: its reward and, per window, the reward without the allowance term and the energy."""
    from pathlib import Path as P

    from moe2sim.agents import Constant, SiteRule, TorchAgent, build_agent

    spec, (kind, arg), seed = job
    env = make_env(spec)
    agent = {"constant": lambda: Constant(env, arg), "site": lambda: SiteRule(env, arg),
             "site-pace": lambda: SiteRule(env, arg, pace=True), "fixed": lambda: build_agent("fixed", env),
             "site-queue": lambda: SiteRule(env, arg, busy_queue=3.0), "threshold": lambda: arg,
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


def make_teacher(kind: str, env, ranking: list[int]):
    """The rule PPO starts from (the best rule on the training days)."""
    from moe2sim.agents import SiteRule

    return SiteRule(env, ranking, pace=kind == "site-pace", busy_queue=3.0 if kind == "site-queue" else None)


def ci(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95 % t-interval."""
    t = T975[len(x) - 2] if len(x) - 1 <= len(T975) else 1.96
    return float(np.mean(x)), float(t * np.std(x, ddof=1) / np.sqrt(len(x)))


def log_job(job):
    """One training day of a constant action, logged for the replay model (moe2sim.agents.replay.log_day)."""
    from moe2sim.agents.replay import log_day

    spec, action, seed = job
    return log_day(make_env(spec), action, seed)


def train_replay_agent(spec: EnvSpec, model, rule_teacher, seed: int, args) -> dict:
    from moe2sim.agents.replay_train import ReplayPGConfig, train_replay

    return train_replay(model, seed=seed, cfg=ReplayPGConfig(updates=args.replay_updates,
                                                             validation=max(1, model.days // 4)))


def train_ppo_agent(spec: EnvSpec, model, rule_teacher, seed: int, args) -> dict:
    from moe2sim.agents.ppo import PPOConfig, train_ppo

    return train_ppo("moe2sim/Budget-v0", dict(scenario=spec[1], overrides=list(spec[2]), action="subset"),
                     minutes=args.minutes, episodes=args.episodes, seed=seed, workers=args.workers,
                     teacher=rule_teacher, cfg=PPOConfig(lr=5e-4))


# the trained agents: name -> (row label, trainer(env spec, replay model of the training days, rule to
# clone, seed, args) -> agent payload)
TRAINERS = {"replay-pg": ("replay-PG agent", train_replay_agent), "ppo": ("PPO agent", train_ppo_agent)}


def days_of(text: str) -> list[int]:
    """'A-B' (inclusive) or 'A' as a list of seeds."""
    lo, _, hi = text.partition("-")
    try:
        days = list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        days = []
    if not days or days[0] < 0:
        raise argparse.ArgumentTypeError(f"expected days as A-B (e.g. 0-9), got {text!r}")
    return days


def policies(spec: EnvSpec, pool, args, out: Path) -> tuple[dict, dict, list[int]]:
    """Every policy of the table, chosen on the training days: label -> episode spec; and the row's facts."""
    from moe2sim.agents.baselines import search_rules
    from moe2sim.agents.replay import collect_replay
    from moe2sim.data.checkpoint import save_checkpoint

    env = make_env(spec)
    n, train = env.action_space.n, args.train_days
    model = collect_replay(env, train, lambda jobs: pool.map(log_job, [(spec, a, s) for a, s in jobs]))
    score = {a: float(model.totals[:, a - 1].mean()) for a in range(1, n)}
    ranking = sorted(score, key=lambda a: -score[a])
    # the site rules rank subsets by how they do while the whole site is up (all windows on a static site)
    up = np.array([env.site.speed(w * env.cfg.window_s).min() >= 1 for w in range(env.cfg.windows)])
    normal = {a: score[a] if env.site.static else float(model.reward[:, a - 1, up].sum(1).mean())
              for a in range(1, n)}
    rule_ranking = sorted(normal, key=lambda a: -normal[a])
    searched, searched_score = search_rules(model)
    rules = {"fixed budgets": ("fixed", None), "site rule": ("site", rule_ranking),
             "site + queue": ("site-queue", rule_ranking), "site + pacing": ("site-pace", rule_ranking),
             "searched rule": ("threshold", searched)}
    specs = {f"constant {a}": ("constant", a) for a in ranking[:args.bound_actions]}
    specs.update(rules)
    facts = {"env": spec[0], "scenario": spec[1], "actions": int(n), "best_constant_action": int(ranking[0]),
             "best_constant_subset": "|".join(env.action_table.subsets[ranking[0] - 1]),
             "train_scores": {int(a): float(score[a]) for a in ranking}, "train_days": train,
             "rule_ranking": rule_ranking, "searched_rule": str(searched),
             "searched_rule_replay_score": searched_score, "training_minutes": {}}
    for agent in args.agents:
        label, train_agent = TRAINERS[agent]
        rule_teacher = None
        if agent == "ppo":  # PPO starts as a clone of the best site rule on the training days
            site_rules = ["site rule", "site + queue", "site + pacing"]
            on_train = pool.map(episode, [(spec, rules[k], s) for k in site_rules for s in train])
            rule_score = {k: np.mean([x["reward"] for x in on_train[i * len(train):(i + 1) * len(train)]])
                          for i, k in enumerate(site_rules)}
            facts["ppo_teacher"] = teacher = max(rule_score, key=rule_score.get)
            rule_teacher = (lambda kind: lambda e: make_teacher(kind, e, rule_ranking))(rules[teacher][0])
        for seed in args.seeds:
            t1 = time.time()
            payload = train_agent(spec, model, rule_teacher, seed, args)
            facts["training_minutes"][f"{label} {seed}"] = (time.time() - t1) / 60
            save_checkpoint(payload, out / f"{spec[0]}-{agent}-{seed}.pt")
            specs[f"{label}, seed {seed}"] = ("torch", payload)
    return specs, facts, ranking


def evaluate(spec: EnvSpec, specs: dict, ranking: list[int], pool, args) -> dict:
    """Every policy on the held-out days of this env (or variant): rewards, paired gains, days won."""
    from moe2sim.agents.baselines import hindsight_bound

    held = args.eval_days
    env = make_env(spec)
    keys = list(specs)
    done = pool.map(episode, [(spec, specs[k], s) for k in keys for s in held])
    runs = {k: done[i * len(held):(i + 1) * len(held)] for i, k in enumerate(keys)}
    top = ranking[:args.bound_actions]
    bound = [hindsight_bound(np.array([runs[f"constant {a}"][i]["sep"] for a in top]),
                             np.array([runs[f"constant {a}"][i]["energy"] for a in top]),
                             env.cfg.energy_allowance_J, env.cfg.reward.energy_overshoot_per_kJ)
             for i in range(len(held))]
    rewards = {"best constant": [x["reward"] for x in runs[f"constant {ranking[0]}"]],
               **{k: [x["reward"] for x in v] for k, v in runs.items() if not k.startswith("constant ")},
               "hindsight bound": bound}
    base = np.array(rewards["best constant"])
    out = {}
    for k, v in rewards.items():
        v = np.array(v, float)
        mean, half = ci(v)
        gain, gain_half = ci(v - base)
        out[k] = {"mean": mean, "ci95": half, "gain": gain, "gain_ci95": gain_half,
                  "gain_pct": 100 * gain / abs(base.mean()), "gain_pct_ci95": 100 * gain_half / abs(base.mean()),
                  "days_better": int((v > base).sum()), "per_day": v.tolist()}
    return out


def bench_env(spec: EnvSpec, pool, args, out: Path) -> dict:
    t0 = time.time()
    specs, row, ranking = policies(spec, pool, args, out)
    print(f"{spec[0]}: policies chosen in {(time.time() - t0) / 60:.1f} min ({row['searched_rule']})", flush=True)
    row["held_out_days"] = args.eval_days
    row["eval"] = {"held-out days": evaluate(spec, specs, ranking, pool, args)}
    for label, override in args.variant:
        row["eval"][label] = evaluate((f"{spec[0]} {label}", spec[1], spec[2] + (override,)), specs, ranking,
                                      pool, args)
        row.setdefault("variants", {})[label] = override
    row["minutes"] = (time.time() - t0) / 60
    return row


def table(rows: list[dict]) -> str:
    lines = ["| env | days | agent | mean reward/day ± 95 % CI | vs best constant (paired, ± 95 % CI) | % ± 95 % CI "
             "| days better |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        for days, agents in row["eval"].items():
            for k, a in agents.items():
                label = f"{k} ({row['best_constant_subset']})" if k == "best constant" else k
                vs = "—" if k == "best constant" else f"{a['gain']:+.0f} ± {a['gain_ci95']:.0f}"
                pct = "—" if k == "best constant" else f"{a['gain_pct']:+.1f} ± {a['gain_pct_ci95']:.1f}"
                won = "—" if k == "best constant" else f"{a['days_better']}/{len(a['per_day'])}"
                lines.append(f"| {row['env']} | {days} | {label} | {a['mean']:.0f} ± {a['ci95']:.0f} | {vs} | {pct} "
                             f"| {won} |")
    return "\n".join(lines)


def env_specs(args, p: argparse.ArgumentParser) -> list[EnvSpec]:
    """The suite names and scenario files asked for; a bad scenario, or one without an `env` block, is a
    one-line error (exit 2)."""
    from moe2sim.errors import InputError
    from moe2sim.scenario import load_scenario

    specs = [suite_spec(name) for name in args.envs]
    for path in args.scenario:
        try:
            sc = load_scenario(path, [])
        except InputError as exc:
            p.error(f"--scenario: {exc}")
        if sc.env is None:
            p.error(f"--scenario {path}: no `env` block (the benchmark needs an env; see scenarios/suite_*.yaml)")
        specs.append((Path(path).stem, str(Path(path).resolve()), ()))
    return specs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="*", default=None, choices=SUITE,
                   help="suite envs (default: the four fixed ones, unless --scenario is given)")
    p.add_argument("--scenario", nargs="+", default=[], metavar="FILE", help="scenario file(s) with an env block")
    p.add_argument("--agents", nargs="*", default=["replay-pg"], choices=list(TRAINERS),
                   help="trained agents to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds: one agent each")
    p.add_argument("--train-days", type=days_of, default=days_of("0-9"), help="training days (seeds), A-B")
    p.add_argument("--eval-days", type=days_of, default=days_of("1000-1009"),
                   help="held-out days (seeds), A-B; another range (e.g. 500-509) is a development set")
    p.add_argument("--variant", nargs=2, action="append", default=[], metavar=("LABEL", "OVERRIDE"),
                   help="also evaluate on the held-out days with this scenario override (repeatable)")
    p.add_argument("--replay-updates", type=int, default=300, help="replay-PG policy updates")
    p.add_argument("--minutes", type=float, default=4.0, help="PPO training time per env and seed")
    p.add_argument("--episodes", type=int, default=600, help="PPO training days at most (sets the lr schedule)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--bound-actions", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("benchmarks/suite_out"))
    args = p.parse_args()
    if args.envs is None:
        args.envs = [] if args.scenario else SUITE[:4]
    if len(args.eval_days) < 2:
        p.error("--eval-days: at least two days (a 95 % interval needs them)")
    specs = env_specs(args, p)
    single_threaded()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with mp.get_context("spawn").Pool(args.workers, initializer=single_threaded) as pool:
        for spec in specs:
            rows.append(bench_env(spec, pool, args, args.out))
            (args.out / "suite.json").write_text(json.dumps(rows, indent=1))
            print(table(rows[-1:]), flush=True)
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
