"""The agents that set the budgets (moe2sim.agents): the rules, one episode's log, and saved torch agents
(what TorchAgent.load accepts and refuses). They act on the two module-scoped envs below (12 windows)."""
from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import W, N_EXPERTS, N_CATS, BASE_LATENCY
from moe2sim.agents import (AGENT_FORMAT, AGENT_VERSION, AGENTS, FixedBudgets, QueueRule, TorchAgent, build_agent,
                            run_episode)
from moe2sim.agents.network import agent_payload, policy_network
from moe2sim.envs import BudgetEnv
from moe2sim.errors import InputError



def test_fixed_budgets_box(box_env):
    agent = FixedBudgets(box_env)
    obs, _ = box_env.reset(seed=0)
    b = box_env.handler.budgets(agent.act(obs))
    assert b.energy_J == pytest.approx(900.0, rel=1e-5)
    np.testing.assert_allclose(b.latency_s, BASE_LATENCY, rtol=1e-5)
    total, log = run_episode(box_env, agent, seed=0)
    busy = dict(obs, queue=np.full(N_EXPERTS, 50, np.float32), arrival_rate=np.full(N_CATS, 9, np.float32))
    np.testing.assert_array_equal(agent.act(busy), agent.act(obs))  # whatever it observes
    assert all(row["energy_budget_J"] == pytest.approx(900.0, rel=1e-5) for row in log)
    assert not any(row["infeasible"] for row in log)
    for c, base in zip(["mmlu", "gsm8k", "arc_challenge", "humaneval"], BASE_LATENCY):
        assert all(row[f"latency_budget_s[{c}]"] == pytest.approx(base, rel=1e-5) for row in log)


def test_fixed_budgets_discrete_is_the_nearest_action(disc_env):
    agent = FixedBudgets(disc_env)
    box = disc_env.handler.action_for(disc_env.initial_budgets)
    # The scenario's budgets as a Box point; the discrete action closest to it (levels are per axis).
    dist = [np.abs(disc_env.handler.box_action(a) - box).sum() for a in range(25)]
    assert agent.act({}) == int(np.argmin(dist)) == 18
    assert disc_env.action_space.contains(agent.act({}))


def queue_obs(env, queue_max: float) -> dict:
    obs, _ = env.reset(seed=0)
    obs = dict(obs)
    obs["queue"] = np.zeros(N_EXPERTS, np.float32)
    obs["queue"][3] = queue_max
    return obs


def test_queue_rule_tightens_latency_monotonically(box_env, disc_env):
    queues = [0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 10, 1000]
    rule = QueueRule(box_env)
    budgets = [box_env.handler.budgets(rule.act(queue_obs(box_env, q))) for q in queues]
    lat = np.array([b.latency_s for b in budgets])
    assert (np.diff(lat, axis=0) <= 1e-12).all() and (np.diff(lat[:7], axis=0) < 0).all()
    np.testing.assert_allclose(lat[0], BASE_LATENCY, rtol=1e-5)
    np.testing.assert_allclose(lat[6:], np.tile(0.4 * BASE_LATENCY, (4, 1)), rtol=1e-5)  # q ≥ q_full
    assert all(b.energy_J == pytest.approx(900.0, rel=1e-5) for b in budgets)
    d_rule = QueueRule(disc_env)
    levels = [d_rule.act(queue_obs(disc_env, q)) % 5 for q in queues]  # latency level j of i·5 + j
    assert all(disc_env.action_space.contains(d_rule.act(queue_obs(disc_env, q))) for q in queues)
    assert levels == sorted(levels, reverse=True) and levels[0] > levels[-1]


def test_run_episode_logs_one_row_per_window(box_env):
    total, log = run_episode(box_env, QueueRule(box_env), seed=3)
    assert len(log) == W
    assert [row["window"] for row in log] == list(range(1, W + 1))
    assert [row["time_s"] for row in log] == [300.0 * k for k in range(1, W + 1)]
    assert total == pytest.approx(sum(row["reward"] for row in log))
    assert {"energy_budget_J", "queue_max", "subset", "infeasible", "latency_budget_s[gsm8k]"} <= set(log[0])
    again, log2 = run_episode(box_env, QueueRule(box_env), seed=3)
    assert again == total and log2 == log


def test_agents_take_the_env_as_gymnasium_make_returns_it():
    """gym.make wraps the env (order enforcing, checker); the agents and run_episode see through that."""
    wrapped = gym.make("moe2sim/Budget-v0", windows=4)
    assert not isinstance(wrapped, BudgetEnv)
    bare = BudgetEnv(windows=4)
    for make in (FixedBudgets, QueueRule):
        total, log = run_episode(wrapped, make(wrapped), seed=5)
        assert (total, log) == run_episode(bare, make(bare), seed=5)
    with pytest.raises(TypeError, match="BudgetEnv"):
        QueueRule(gym.make("CartPole-v1"))


def small_agent(env, **changes) -> dict:
    """A saved agent (8 hidden units, a few observation keys) for this env, with `changes` to its fields."""
    keys = ["arrival_rate", "queue", "utilisation", "time_of_day"]
    width = N_CATS + 2 * N_EXPERTS + 2
    n_out = 25 if env.cfg.action == "discrete" else 1 + N_CATS
    torch.manual_seed(0)
    net = policy_network(width, 8, n_out)
    return {**agent_payload(net.state_dict(), keys, np.zeros(width), np.ones(width), env.cfg.action, 8, n_out),
            **changes}


def test_torch_agent_load_rejects_bad_files(tmp_path, box_env):
    """Each problem is an InputError naming the file (and the field where there is one); the wording
    is the checkpoint loader's, so only its gist is matched."""
    def rejected(path, field):
        with pytest.raises(InputError) as err:
            TorchAgent.load(path)
        assert err.value.file == str(path) and err.value.field == field, err.value
        return str(err.value)

    assert "not found" in rejected(tmp_path / "missing.pt", None)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a torch file")
    assert "agent" in rejected(junk, None)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)  # a torch file, but not an agent
    assert AGENT_FORMAT in rejected(other, "format")
    plain = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), plain)
    rejected(plain, "format")
    old = tmp_path / "old.pt"
    torch.save(small_agent(box_env, version=AGENT_VERSION + 1), old)
    assert f"version {AGENT_VERSION + 1}" in rejected(old, "version")
    bad_shape = tmp_path / "shape.pt"
    torch.save(small_agent(box_env, hidden=16), bad_shape)  # says 16 hidden units, weights have 8
    rejected(bad_shape, "state_dict")
    numpy_stats = tmp_path / "numpy.pt"
    torch.save(small_agent(box_env, obs_mean=np.zeros(N_CATS + 2 * N_EXPERTS + 2)), numpy_stats)
    assert "plain Python types" in rejected(numpy_stats, None)  # and says how to save them


@pytest.mark.parametrize("damage", [dict(drop="obs_mean"), dict(drop="state_dict"), dict(hidden="eight")],
                         ids=["no-obs_mean", "no-state_dict", "hidden-str"])
def test_torch_agent_load_rejects_a_damaged_payload(tmp_path, box_env, damage):
    """BUG: a file with the right format and version but missing or mistyped fields escapes as
    KeyError/TypeError from TorchAgent.__init__ instead of InputError (Gate.load catches the same)."""
    payload = small_agent(box_env, **{k: v for k, v in damage.items() if k != "drop"})
    payload.pop(damage.get("drop", ""), None)
    path = tmp_path / "damaged.pt"
    torch.save(payload, path)
    with pytest.raises(InputError):
        TorchAgent.load(path)


def test_torch_agent_acts_in_the_action_space(tmp_path, box_env, disc_env):
    for env in (box_env, disc_env):
        path = tmp_path / f"{env.cfg.action}.pt"
        torch.save(small_agent(env), path)
        agent = build_agent(str(path), env)
        obs, _ = env.reset(seed=0)
        for _ in range(3):
            action = agent.act(obs)
            assert env.action_space.contains(action)
            obs, *_ = env.step(action)
    with pytest.raises(InputError, match="trained for a box action") as err:
        build_agent(str(tmp_path / "box.pt"), disc_env)
    assert err.value.field == "action"


def test_rollout_help_names_every_agent(monkeypatch, capsys):
    """`moe2sim rollout --agent` lists the registry by hand (the CLI parses without importing the agents)."""
    from moe2sim.cli.main import build_parser

    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: no name split at its hyphen
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rollout", "--help"])
    agent_help = next(line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("--agent"))
    assert set(AGENTS) <= set(re.findall(r"[\w-]+", agent_help))


# --- baselines: best constant, searched threshold rules (issue 24) ---------------------------------

def planted_model(seed: int = 0):
    """Replayed days where 'action 2 while expert 1 runs at full speed, else action 3' is optimal: action 2
    earns 1 while expert 1 is at speed 1 and -1 when it is slowed or down, action 3 earns 0.3, the others
    less; the arrivals and price carry no information."""
    from moe2sim.agents.replay import ReplayModel

    rng = np.random.default_rng(seed)
    days, windows, actions = 6, 40, 4
    speed = np.ones((days, windows, 3), np.float32)
    speed[:, :, 1] = rng.choice([0.0, 0.5, 1.0], size=(days, windows))
    reward = np.zeros((days, actions, windows))
    reward[:, 0] = 0.1
    reward[:, 1] = np.where(speed[:, :, 1] >= 1, 1.0, -1.0)
    reward[:, 2] = 0.3
    reward[:, 3] = rng.normal(0, 0.05, (days, windows))
    price = rng.choice([0.1, 0.3, 0.6, 0.9], size=(days, windows, 1)).astype(np.float32)
    fields = {"expert_speed": speed, "energy_price": price,
              "arrival_rate": rng.uniform(0, 1, (days, windows, 2)).astype(np.float32)}
    return ReplayModel(reward.sum(2), reward, np.ones((days, actions, windows)), fields,
                       np.eye(actions, 3, dtype=np.float32), 1e9, 1.0), reward


def test_rule_search_finds_a_planted_optimal_rule():
    from moe2sim.agents.baselines import best_constant, score_rules, search_rules
    from moe2sim.agents.rules import Condition, Feature, ThresholdRule

    model, reward = planted_model()
    rule, score = search_rules(model)
    oracle = reward.max(1).sum(1).mean()  # the best action every window, known in hindsight
    assert score == pytest.approx(oracle)
    assert (rule.then, rule.otherwise) == (2, 3) and rule.conditions[0].feature == Feature("expert_speed", 1)
    assert 0.5 < rule.conditions[0].threshold <= 1.0 and not rule.conditions[0].below
    # the rule acts the same on one observation in the env as in the batched search
    assert rule.act({"expert_speed": np.array([1, 1, 1.0])}) == 2 and rule.act({"expert_speed": np.array([1, .5, 1])}) == 3
    assert best_constant(model) == 3 and score > model.totals[:, 2].mean()
    wrong = ThresholdRule((Condition(Feature("expert_speed", 1), 0.25),), 2, 3)  # also takes 2 at speed 0.5
    assert score_rules(model, [wrong])[0] < score


def test_rule_search_uses_a_second_condition_when_it_pays():
    """Planted: action 2 is best while expert 1 is at full speed or the price is below 0.2."""
    from moe2sim.agents.baselines import search_rules

    model, reward = planted_model(1)
    cheap = model.fields["energy_price"][:, :, 0] < 0.2
    reward[:, 1] = np.where((model.fields["expert_speed"][:, :, 1] >= 1) | cheap, 1.0, -1.0)
    model = type(model)(reward.sum(2), reward, model.energy_J, model.fields, model.members, 1e9, 1.0)
    rule, score = search_rules(model)
    assert score == pytest.approx(reward.max(1).sum(1).mean())
    assert {str(c.feature) for c in rule.conditions} == {"expert_speed[1]", "energy_price[0]"}
