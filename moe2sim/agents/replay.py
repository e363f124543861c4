"""A replay model of a subset-action BudgetEnv, built from logged days, and policy rollouts in it.

The load is exogenous (the env draws it from its own stream), so every action can be logged on the same
day. `collect_replay` runs each subset action as a constant for a whole day, for each day (seed), and keeps, per
action and window, what the queries that *arrived* in that window earned (quality·correct −
latency_violation·late − energy price · kJ; answers finished after the day count, as in the env)
and the active energy they used, plus the observation fields that do not depend on the actions
(REPLAY_KEYS but energy_spent). `ReplayModel.rollout` plays policies on those days: the action chosen
for window w earns what its queries earned in w in the constant run of that action; the energy
allowance term is charged on the cumulative energy of the actions chosen, as the env charges it; the
observation is rebuilt from the logged fields, the energy spent so far and the subset chosen last. The
policy does not see queues and latencies (they depend on the actions taken in ways the replay does not
model).

Attributing outcomes to the arrival window (not to the completion window, as the env's reward does)
charges a backlog to the choice that built it. The model still assumes that the queries of window w meet
the queues the constant run of that action had (queues built under other actions are not modelled), so it
is an approximation; its error on a policy is measured by running the policy in the env.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from moe2sim.envs.budget_env import BudgetEnv

# the observation fields a policy trained on a replay sees (TorchAgent keys, in this order): all but
# energy_spent and subset are the same whatever the actions; those two follow the actions chosen
REPLAY_KEYS = ["arrival_rate", "energy_spent", "time_of_day", "subset", "expert_speed", "latency_target",
               "energy_price", "progress"]


@dataclass(frozen=True)
class ReplayModel:
    """Logged days of every subset action of one env (see the module docstring)."""

    totals: np.ndarray           # (D, A) the env's reward for the day of each constant action (row a: action a + 1)
    reward: np.ndarray           # (D, A, W) arrival-attributed, without the energy-allowance term
    energy_J: np.ndarray         # (D, A, W) active energy of those queries
    fields: dict[str, np.ndarray]  # the other REPLAY_KEYS: key -> (D, W, dim), at each decision (subset:
    #                                the scenario's own, as observed before the first choice; only w = 0 is used)
    members: np.ndarray          # (A, N) the subset of each action, as the observation's `subset`
    allowance_J: float
    overshoot_per_kJ: float

    @property
    def days(self) -> int:
        return self.reward.shape[0]

    @property
    def windows(self) -> int:
        return self.reward.shape[2]

    def subset(self, days: list[int]) -> "ReplayModel":
        return ReplayModel(self.totals[days], self.reward[days], self.energy_J[days],
                           {k: v[days] for k, v in self.fields.items()}, self.members, self.allowance_J,
                           self.overshoot_per_kJ)

    def observation(self, w: int, day: np.ndarray, spent_J: np.ndarray, chosen: np.ndarray | None) -> np.ndarray:
        """(B, F) flattened observation (REPLAY_KEYS) at decision w of rollouts on days `day` that have
        spent `spent_J` and last chose the actions `chosen` (None at the first decision: the scenario's
        own subset is in force)."""
        own = {"energy_spent": (spent_J / self.allowance_J)[:, None],
               "subset": self.fields["subset"][day, w] if chosen is None else self.members[chosen - 1]}
        return np.concatenate([own[key] if key in own else self.fields[key][day, w]
                               for key in REPLAY_KEYS], axis=1).astype(np.float32)

    def rollout(self, act, day: np.ndarray) -> "ReplayRollout":
        """Play `act` ((B, F) observations, w -> (B,) subset actions ≥ 1; holding is not modelled) once on
        each of the days `day` (B,)."""
        spent, a = np.zeros(len(day)), None
        xs, acts, every = [], [], []
        for w in range(self.windows):
            x = self.observation(w, day, spent, a)
            a = np.asarray(act(x, w))
            if (a < 1).any():
                raise ValueError("a replayed policy chooses a subset action (>= 1) every window")
            e = self.energy_J[day, :, w]
            before = spent[:, None]
            over = np.maximum(0.0, before + e - self.allowance_J) - np.maximum(0.0, before - self.allowance_J)
            every.append(self.reward[day, :, w] - self.overshoot_per_kJ * over / 1e3)
            spent = spent + e[np.arange(len(day)), a - 1]
            xs.append(x)
            acts.append(a)
        every_ = np.stack(every, 1)
        acts_ = np.stack(acts, 1)
        taken = np.take_along_axis(every_, acts_[..., None] - 1, 2)[..., 0]
        return ReplayRollout(np.stack(xs, 1), acts_, taken, every_)


@dataclass(frozen=True)
class ReplayRollout:
    """Policies played on replayed days: B rollouts of W windows."""

    obs: np.ndarray       # (B, W, F) the observations (REPLAY_KEYS, flattened)
    actions: np.ndarray   # (B, W)
    rewards: np.ndarray   # (B, W) what the actions earned
    every: np.ndarray     # (B, W, A) what each action (row a: action a + 1) would have earned in that window,
    #                       from the same state (the energy spent so far), the future aside


@dataclass(frozen=True)
class LoggedDay:
    """One day of one constant subset action (log_day)."""

    total: float                 # the env's reward for the day
    reward: np.ndarray           # (W,) arrival-attributed, as ReplayModel.reward
    energy_J: np.ndarray         # (W,)
    fields: dict[str, np.ndarray]  # key -> (W, dim): the observation fields at each decision


def log_day(env: BudgetEnv, action: int, seed: int) -> LoggedDay:
    """Run a constant subset action for a day and log it (see the module docstring)."""
    cfg, site = env.cfg, env.site
    obs, _ = env.reset(seed=seed)
    seen, total, done = [obs], 0.0, False
    while not done:
        obs, r, terminated, truncated, _ = env.step(action)
        total += r
        done = terminated or truncated
        seen.append(obs)
    q, _ = env.records()
    arrival = q["arrival_s"].to_numpy()
    window = np.minimum((arrival // cfg.window_s).astype(int), cfg.windows - 1)
    category = q["category"].map({c.name: i for i, c in enumerate(env.scenario.categories)}).to_numpy()
    late = q["latency_s"].to_numpy() > env.handler.base_latency[category] * site.latency_target.at(arrival)
    energy = q["energy_J"].to_numpy()
    w = cfg.reward
    per_query = (w.quality * q["correct"].to_numpy(float) - w.latency_violation * late
                 - site.energy_price.at(arrival) * energy / 1e3)
    fields = {k: np.array([o[k] for o in seen[:-1]], np.float32) for k in REPLAY_KEYS if k != "energy_spent"}
    return LoggedDay(total, np.bincount(window, per_query, cfg.windows), np.bincount(window, energy, cfg.windows),
                     fields)


def collect_replay(env: BudgetEnv, seeds: list[int],
                   log_days: Callable[[list[tuple[int, int]]], list[LoggedDay]] | None = None) -> ReplayModel:
    """Log every subset action on each day (seed). `log_days` maps (action, seed) jobs to LoggedDays
    (e.g. on a process pool); default: log_day in this process, on `env`."""
    table = env.action_table
    if table is None:
        raise ValueError("a replay model needs the subset action (env.action: subset)")
    k = len(table)
    logged = (log_days or (lambda jobs: [log_day(env, a, s) for a, s in jobs]))(
        [(a, s) for s in seeds for a in range(1, k + 1)])
    days = [logged[d * k:(d + 1) * k] for d in range(len(seeds))]
    return ReplayModel(np.array([[x.total for x in day] for day in days]),
                       np.array([[x.reward for x in day] for day in days]),
                       np.array([[x.energy_J for x in day] for day in days]),
                       {key: np.array([day[0].fields[key] for day in days]) for key in days[0][0].fields},
                       np.array([np.isin(env.site.names, s) for s in table.subsets], np.float32),
                       env.cfg.energy_allowance_J, env.cfg.reward.energy_overshoot_per_kJ)
