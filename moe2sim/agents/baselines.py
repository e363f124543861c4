"""The baselines a trained agent is judged against, all chosen on training days (a replay model of them,
moe2sim.agents.replay): the best constant action, the best searched threshold rule, and the hindsight
bound on a held-out day.

Rule search (search_rules): the family is ThresholdRule (moe2sim.agents.rules): `then` while any of up to
`max_conditions` conditions `feature >= t` / `feature < t` holds, else `otherwise`. Features: each
expert's speed, the energy price, the share of the energy allowance spent and the total arrival rate
(those the replay logs). Candidate actions: the `actions` best constants; thresholds: midpoints between
the distinct values a feature takes on the training days (at most `thresholds` of them, at quantiles),
and a fixed grid for the energy spent (it depends on the rule's own choices). One-condition rules are
scored exhaustively (every feature, threshold and ordered pair of actions); the `beam` best are widened
by a second condition (every feature, threshold, direction), and so on. Score: the mean total reward
over the training days in the replay model, where every rule of a batch plays every day at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moe2sim.agents.replay import ReplayModel
from moe2sim.agents.rules import Condition, Feature, ThresholdRule

SPENT_GRID = (0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1)  # thresholds on the share of the allowance spent


@dataclass(frozen=True)
class RuleSearch:
    actions: int = 6          # candidate actions: the best constants on the training days
    thresholds: int = 9       # per feature, at most
    max_conditions: int = 2
    beam: int = 20            # rules widened by one more condition


def best_constant(model: ReplayModel) -> int:
    """The subset action whose constant run earns most on the model's days (mean total reward)."""
    return int(np.argmax(model.totals.mean(0))) + 1


def features_of(model: ReplayModel) -> list[Feature]:
    """The rule features the replay logs (see the module docstring)."""
    n = model.fields["expert_speed"].shape[2] if "expert_speed" in model.fields else 0
    return ([Feature("expert_speed", i) for i in range(n)] + [Feature("energy_price", 0), Feature("energy_spent", 0)]
            + [Feature("arrival_rate")] * ("arrival_rate" in model.fields))


def thresholds_of(model: ReplayModel, feature: Feature, most: int) -> np.ndarray:
    """Midpoints between the distinct values the feature takes on the model's days (at most `most`)."""
    if feature.key == "energy_spent":
        return np.array(SPENT_GRID)
    values = np.unique(feature.value(model.fields).ravel())
    mids = (values[1:] + values[:-1]) / 2
    return mids if len(mids) <= most else np.unique(np.quantile(values, np.linspace(0, 1, most + 2)[1:-1]))


def score_rules(model: ReplayModel, rules: list[ThresholdRule], days: list[int] | None = None) -> np.ndarray:
    """(R,) mean total reward of each rule over the days (default all) in the replay model."""
    days = list(range(model.days)) if days is None else list(days)
    feats = sorted({c.feature for r in rules for c in r.conditions}, key=str)
    col = {f: i for i, f in enumerate(feats)}
    width = max(len(r.conditions) for r in rules)
    # per rule and condition slot: feature column, threshold, direction; unused slots never hold
    fcol = np.array([[col[c.feature] for c in r.conditions] + [0] * (width - len(r.conditions)) for r in rules])
    thr = np.array([[c.threshold for c in r.conditions] + [np.inf] * (width - len(r.conditions)) for r in rules])
    below = np.array([[c.below for c in r.conditions] + [False] * (width - len(r.conditions)) for r in rules])
    then, otherwise = np.array([r.then for r in rules]), np.array([r.otherwise for r in rules])
    day = np.repeat(np.array(days), len(rules))          # row = day-major, rule-minor
    rule = np.tile(np.arange(len(rules)), len(days))
    spent, total = np.zeros(len(day)), np.zeros(len(day))
    for w in range(model.windows):
        obs = {k: v[day, w] for k, v in model.fields.items()}
        obs["energy_spent"] = (spent / model.allowance_J)[:, None]
        values = np.stack([f.value(obs) for f in feats], 1)                  # (B, F)
        v = np.take_along_axis(values, fcol[rule], 1)                         # (B, width)
        holds = np.where(below[rule], v < thr[rule], v >= thr[rule]).any(1)
        a = np.where(holds, then[rule], otherwise[rule])
        e = model.energy_J[day, a - 1, w]
        total += model.reward[day, a - 1, w] - model.overshoot_charge(spent, e)
        spent += e
    return total.reshape(len(days), len(rules)).mean(0)


def search_rules(model: ReplayModel, cfg: RuleSearch = RuleSearch()) -> tuple[ThresholdRule, float]:
    """The best ThresholdRule on the model's days, and its score (see the module docstring)."""
    actions = [int(a) + 1 for a in np.argsort(-model.totals.mean(0))[:cfg.actions]]
    conditions = [Condition(f, float(t), below) for f in features_of(model)
                  for t in thresholds_of(model, f, cfg.thresholds) for below in (False, True)]
    rules = [ThresholdRule((c,), a, b) for c in conditions if not c.below for a in actions for b in actions if a != b]
    scores = score_rules(model, rules)
    best = [rules[i] for i in np.argsort(-scores)[:cfg.beam]]
    found, found_score = rules[int(np.argmax(scores))], float(scores.max())
    for _ in range(cfg.max_conditions - 1):
        rules = [ThresholdRule(r.conditions + (c,), r.then, r.otherwise) for r in best for c in conditions
                 if c.feature not in {x.feature for x in r.conditions}]
        scores = score_rules(model, rules)
        best = [rules[i] for i in np.argsort(-scores)[:cfg.beam]]
        if scores.max() > found_score:
            found, found_score = rules[int(np.argmax(scores))], float(scores.max())
    return found, found_score


def hindsight_bound(rewards: np.ndarray, energy_J: np.ndarray, allowance_J: float, per_kJ: float) -> float:
    """Best day from per-window choices among runs (A, W) of one day knowing the realised load: the reward
    of each window without the energy-allowance term and its energy; the allowance couples the windows,
    so a Lagrangian price on energy is scanned. It assumes a window's outcome does not depend on earlier
    choices (queues carry over in reality): an estimate of what foresight earns, not a strict bound."""
    best, cols = -np.inf, np.arange(rewards.shape[1])
    for lam in np.r_[0.0, np.geomspace(1e-6, 2 * per_kJ / 1e3 + 1e-6, 60)]:
        pick = np.argmax(rewards - lam * energy_J, axis=0)
        total_e = energy_J[pick, cols].sum()
        best = max(best, rewards[pick, cols].sum() - per_kJ * max(0.0, total_e - allowance_J) / 1e3)
    return float(best)
