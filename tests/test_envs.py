"""The Gymnasium environment (moe2sim.envs.BudgetEnv): API conformance, registration, seeding, standard
wrappers and vector envs, input checks, what one window measures and rewards, the records of an episode,
and a PPO smoke test when stable-baselines3 is installed (the agents: tests/test_agents.py).

Building an env costs ~1.3 s (traces, gate, selector), so most tests share the two module-scoped
envs below and run short episodes (12 windows of 5 min)."""
from __future__ import annotations

import functools
import json
import math
import os
import signal
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np

from moe2sim.sim import records
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

from conftest import SCENARIOS, TRACES, W, N_EXPERTS, N_CATS, BASE_LATENCY
from moe2sim.envs import ENV_IDS, BudgetEnv, register_envs
from moe2sim.errors import InputError
from moe2sim.scenario import load_scenario
from moe2sim.selection.budgets import Budgets

BUDGET_YAML = SCENARIOS / "budget_env.yaml"


def rollout(env, seed, actions) -> list[tuple]:
    """[(obs, reward, terminated, truncated, info)] of reset(seed) then one step per action."""
    obs, info = env.reset(seed=seed)
    out = [(obs, None, False, False, info)]
    for a in actions:
        out.append(env.step(a))
    return out


def assert_same(a, b, path="") -> None:
    """Exact equality of nested dicts / lists / tuples / arrays / scalars."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and not (a and isinstance(a[0], str)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        np.testing.assert_array_equal(a, b, err_msg=path)


def random_actions(seed: int, n: int = W) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, 1 + N_CATS).astype(np.float32) for _ in range(n)]


# --- 1. API conformance and registration ---------------------------------------------------------

# The observation space is unbounded by design (queues, rates, latencies, energy over the allowance);
# the checker's "spec" note is about a directly constructed env. Anything else the checker says fails.
TOLERATED_CHECKER_WARNINGS = ("maximum value is infinity", "not having a spec")


@pytest.mark.parametrize("action", ["box", "discrete"])
def test_check_env(action):
    env = BudgetEnv(windows=20, action=action)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    unexpected = [str(w.message) for w in caught if not any(t in str(w.message) for t in TOLERATED_CHECKER_WARNINGS)]
    assert not unexpected
    assert isinstance(env.action_space, gym.spaces.Box if action == "box" else gym.spaces.Discrete)


def test_env_ids_are_registered():
    assert set(ENV_IDS) == {"moe2sim/Budget-v0", "moe2sim/BudgetDiscrete-v0", "moe2sim/Paper-v0",
                            "moe2sim/Quickstart-v0", "moe2sim/Suite-Paper-v0", "moe2sim/Suite-Rationing-v0",
                            "moe2sim/Suite-Outage-v0", "moe2sim/Suite-Peak-v0", "moe2sim/Suite-Outage-Random-v0",
                            "moe2sim/Suite-Rationing-Random-v0"}
    assert {k for k in gym.registry if k.startswith("moe2sim/")} == set(ENV_IDS)
    register_envs()  # idempotent: no "overriding environment" error or duplicate
    assert {k for k in gym.registry if k.startswith("moe2sim/")} == set(ENV_IDS)


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_make_every_registered_id(env_id):
    env = gym.make(env_id, windows=3, window_s=120.0, overrides=["seed=3"])
    base = env.unwrapped
    assert isinstance(base, BudgetEnv) and env.spec.id == env_id
    assert base.cfg.windows == 3 and base.cfg.window_s == 120.0
    assert base.scenario.seed == 3 and base.scenario.duration_s == 360.0 and base.scenario.queries is None
    discrete = env_id == "moe2sim/BudgetDiscrete-v0" or "Suite" in env_id
    assert isinstance(env.action_space, gym.spaces.Discrete if discrete else gym.spaces.Box)
    with pytest.raises(RuntimeError, match="reset"):  # the bare env, before any reset
        base.step(env.action_space.sample())
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.action_space.seed(0)
    for step in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward)
        assert not terminated and truncated == (step == 3)
    env.close()


FRESH_SCRIPT = """
import json, gymnasium as gym
plain = sorted(k for k in gym.registry if k.startswith("moe2sim/"))
env = gym.make("moe2sim.envs:moe2sim/BudgetDiscrete-v0", windows=2)
env.reset(seed=0)
env.step(12)
truncated = env.step(12)[3]
print(json.dumps({"gymnasium": gym.__version__, "plain": plain, "truncated": bool(truncated),
                  "after": sorted(k for k in gym.registry if k.startswith("moe2sim/"))}))
"""


@pytest.fixture(scope="module")
def fresh_interpreter(tmp_path_factory) -> dict:
    """What a fresh interpreter sees after a plain `import gymnasium` (cwd outside the repository)."""
    out = subprocess.run([sys.executable, "-c", FRESH_SCRIPT], cwd=tmp_path_factory.mktemp("fresh"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_module_prefixed_id_works_in_a_fresh_interpreter(fresh_interpreter):
    assert fresh_interpreter["truncated"] is True
    assert set(fresh_interpreter["after"]) == set(ENV_IDS)


def test_plain_import_gymnasium_registers_nothing_of_ours(fresh_interpreter):
    """Gymnasium 1.x loads no plugin entry points, so the ids come from importing moe2sim.envs or from
    the module:id form (checked above); a plain `import gymnasium` must not be relied on."""
    assert not set(fresh_interpreter["plain"]) & set(ENV_IDS)


# --- 2. Seeding ------------------------------------------------------------------------------------

def test_same_seed_same_trajectory_and_reset_reproduces(box_env):
    actions = random_actions(1)
    first = rollout(box_env, 7, actions)
    other = rollout(box_env, 8, actions)
    again = rollout(box_env, 7, actions)  # reset(seed) after a whole episode
    assert_same(first, again)
    rates = lambda traj: np.array([step[0]["arrival_rate"] for step in traj[1:]])  # noqa: E731
    assert not np.array_equal(rates(first), rates(other))
    assert [s[1] for s in first] != [s[1] for s in other]
    # reset() without a seed continues the generator: a new episode, not a replay.
    unseeded = rollout(box_env, None, actions)
    assert not np.array_equal(rates(first), rates(unseeded))


def test_two_instances_same_seed_same_trajectory(disc_env):
    actions = [int(a) for a in np.random.default_rng(2).integers(0, 25, W)]
    twin = gym.make("moe2sim/BudgetDiscrete-v0", windows=W)
    assert_same(rollout(disc_env, 5, actions), rollout(twin, 5, actions))


def test_reset_seed_reproduces_with_uniform_policy():
    """BUG: with policy.name=uniform the router's own generator (moe2sim/policy.py UniformRouter.rng,
    seeded once from scenario.seed when the twin is built) is never reseeded by BudgetEnv.reset, so
    reset(seed=s) after an episode routes differently from the first episode with seed s."""
    env = BudgetEnv(windows=W, overrides=["policy.name=uniform"])
    actions = [env.handler.action_for(env.initial_budgets)] * W
    first = rollout(env, 7, actions)
    again = rollout(env, 7, actions)
    assert_same(first, again)


@pytest.mark.parametrize("service", ["profile", "trace-replay"])
def test_arrivals_do_not_depend_on_the_actions(service):
    """The load is exogenous: two agents on the same seed must see the same queries. 15 windows of
    10 min reach past the first 8,192-candidate arrival chunk (~6,000 s at the 1.35/s peak).

    BUG (trace-replay): BudgetEnv.reset gives the workload and the simulation one generator; trace-replay
    service draws from it per leg, so how many legs the agent's subsets create shifts every later arrival
    chunk (categories, prompts and times). Twin.simulate shares a generator the same way."""
    overrides = [] if service == "profile" else [
        f"experts.{i}.service={{file: devices/h200_probe.csv, model: llama-3.1-8b}}" for i in range(N_EXPERTS)]
    env = BudgetEnv(window_s=600.0, windows=15, overrides=overrides)
    seen, subsets = [], []
    for action in (np.ones(1 + N_CATS, np.float32), np.array([-0.3, 1, 1, 1, 1], np.float32)):
        traj = rollout(env, 0, [action] * 15)
        subsets.append(traj[-1][4]["subset"])
        queries, _ = env.records()
        seen.append(queries[["arrival_s", "category", "prompt_id", "output_tokens"]])
    assert len(subsets[0]) > len(subsets[1])  # the two agents really do route differently
    assert seen[0]["arrival_s"].max() > 6_100  # past the first chunk
    a, b = (x.to_numpy() for x in seen)
    n = min(len(a), len(b))
    differs = np.flatnonzero((a[:n] != b[:n]).any(axis=1))
    first = int(differs[0]) if len(differs) else n
    assert len(a) == len(b) and not len(differs), (
        f"{len(a)} vs {len(b)} queries; they differ from query {first} (t = {a[min(first, n - 1), 0]:.0f} s) on")


# --- 3. Wrappers and vector envs --------------------------------------------------------------------

def test_flatten_and_normalize_observation(box_env):
    env = gym.wrappers.NormalizeObservation(gym.wrappers.FlattenObservation(box_env))
    # rates, p50, p95 | queue, util, subset, speed | accuracy, energy, time, budgets | target, price, progress
    width = 3 * N_CATS + 4 * N_EXPERTS + 1 + 1 + 2 + (1 + N_CATS) + 3
    assert env.observation_space.shape == (width,)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (width,) and np.isfinite(obs).all()
    done = False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(box_env.handler.action_for(box_env.initial_budgets))
        assert obs.shape == (width,) and np.isfinite(obs).all()
        done = terminated or truncated
    assert env.obs_rms.count > W and np.abs(env.obs_rms.mean).sum() > 0


def test_clip_action(box_env):
    env = gym.wrappers.ClipAction(box_env)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.full(1 + N_CATS, 5.0, np.float32))  # -> all ones: loosest budgets
    expected = box_env.handler.budgets(np.ones(1 + N_CATS, np.float32))
    assert not info["infeasible"]
    assert info["energy_budget_J"] == pytest.approx(1500.0) == expected.energy_J
    np.testing.assert_allclose(info["latency_budget_s"], 2.0 * BASE_LATENCY)
    _, _, _, _, info = env.step(np.full(1 + N_CATS, -5.0, np.float32))  # -> -1: 150 J, infeasible
    assert info["infeasible"] and info["energy_budget_J"] == pytest.approx(1500.0)


def test_record_episode_statistics(disc_env):
    env = gym.wrappers.RecordEpisodeStatistics(disc_env)
    env.reset(seed=3)
    rewards, done, info = [], False, {}
    while not done:
        _, r, terminated, truncated, info = env.step(18)
        rewards.append(r)
        done = terminated or truncated
    assert info["episode"]["l"] == W
    assert info["episode"]["r"] == pytest.approx(sum(rewards), rel=1e-6)


def run_vector_episode(envs, windows: int) -> None:
    """reset, a full episode, the autoreset step (NEXT_STEP mode) and one step of the next episode."""
    obs, info = envs.reset(seed=[1, 2])
    assert obs["queue"].shape == (2, N_EXPERTS) and obs["budgets"].shape == (2, 1 + N_CATS)
    envs.action_space.seed(0)
    for step in range(1, windows + 1):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert reward.shape == (2,) and not terminated.any()
        assert truncated.all() == (step == windows) and truncated.any() == (step == windows)
        assert info["energy_budget_J"].shape == (2,)
        if step == 1:  # different seeds, different load
            assert not np.array_equal(obs["arrival_rate"][0], obs["arrival_rate"][1])
    assert envs.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())  # resets both
    assert (reward == 0).all() and not terminated.any() and not truncated.any()
    assert (obs["arrival_rate"] == 0).all() and np.allclose(obs["time_of_day"], [[0, 1], [0, 1]])
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert not truncated.any() and (obs["time_of_day"][:, 0] > 0).all()


def test_sync_vector_env():
    envs = gym.vector.SyncVectorEnv([functools.partial(BudgetEnv, windows=3)] * 2)
    try:
        run_vector_episode(envs, 3)
    finally:
        envs.close()


def single_threaded_budget_env(**kwargs) -> BudgetEnv:
    """Worker-side workaround for the fork deadlock below: one torch thread before any torch op."""
    import torch

    torch.set_num_threads(1)
    return BudgetEnv(**kwargs)


def test_async_vector_env():
    # fork, as the default on Linux, but with the worker-side workaround (context="spawn" works too,
    # at ~15 s of worker imports here).
    envs = gym.vector.AsyncVectorEnv([functools.partial(single_threaded_budget_env, windows=3)] * 2,
                                     context="fork" if sys.platform == "linux" else None)
    try:
        run_vector_episode(envs, 3)
    finally:
        envs.close()


FORK_SCRIPT = """
import functools, math, multiprocessing, os, signal, sys, time
import gymnasium as gym
from moe2sim.envs import BudgetEnv

def hung(signum, frame):
    for child in multiprocessing.active_children():
        child.kill()
    print("HUNG", multiprocessing.get_start_method(), flush=True)
    os._exit(3)

# The parent builds envs first, as AsyncVectorEnv itself does for its spaces; timing a warm build
# scales the deadline to this machine's speed and load (healthy, the rest takes ~5 warm builds).
BudgetEnv(windows=2)
start = time.perf_counter()
BudgetEnv(windows=2)
build_s = time.perf_counter() - start
signal.signal(signal.SIGALRM, hung)
signal.alarm(max(int(sys.argv[1]), math.ceil(15 * build_s)))
envs = gym.vector.AsyncVectorEnv([functools.partial(BudgetEnv, windows=2)] * 2)
envs.reset(seed=0)
for _ in range(3):
    envs.step(envs.action_space.sample())
envs.close()
print("OK", multiprocessing.get_start_method(), flush=True)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork is the default start method on Linux only")
def test_async_vector_env_default_context():
    """BUG: AsyncVectorEnv with the default start method (fork on Linux before Python 3.14) deadlocks.
    AsyncVectorEnv builds one env in the parent to read its spaces; building it runs torch ops
    (moe2sim/routing/gate.py Gate.load -> load_state_dict, Gate.logits) on torch's multi-threaded (OpenMP)
    pool, and a forked child that then uses torch (its own BudgetEnv's Gate.load) hangs forever.
    It works when the parent never used more than one torch thread (torch.set_num_threads(1)
    before building), when each worker sets one thread before building (test_async_vector_env), or
    with context="spawn"/"forkserver".

    Healthy, the vector env is up and stepped within ~5 warm env builds (~2 s); the alarm gives it 15
    (at least 6 s), then kills the workers."""
    proc = subprocess.Popen([sys.executable, "-c", FORK_SCRIPT, "6"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    assert out.strip().startswith("OK"), f"AsyncVectorEnv (default context) did not finish: {out!r} {err[-2000:]}"


# --- 4. Bad input --------------------------------------------------------------------------------------

BOX_SPACE = r"action space Box\(-1\.0, 1\.0, \(5,\), float32\)"


@pytest.mark.parametrize("action", [
    np.zeros(4, np.float32), np.zeros((1, 5), np.float32), np.zeros(6), [0.0] * 4,
    np.array([np.nan, 0, 0, 0, 0], np.float32), np.full(5, np.nan),
    np.array([1.5, 0, 0, 0, 0], np.float32), np.array([0, 0, 0, 0, -1.01]), np.array([0, 0, np.inf, 0, 0]),
], ids=["short", "2d", "long-f64", "short-list", "nan", "all-nan", "above", "below", "inf"])
def test_bad_box_action_raises_naming_the_space(box_env, action):
    box_env.reset(seed=0)
    with pytest.raises(ValueError, match=BOX_SPACE):
        box_env.step(action)
    assert box_env.window == 0  # nothing was simulated
    box_env.step(np.zeros(5, np.float32))  # the env is still usable
    assert box_env.window == 1


@pytest.mark.parametrize("action", [25, -1, 100, 3.5, np.int64(25)])
def test_bad_discrete_action_raises(disc_env, action):
    disc_env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action space Discrete\(25\)"):
        disc_env.step(action)
    assert disc_env.window == 0


def test_step_after_truncation_raises(box_env):
    rollout(box_env, 0, [np.zeros(5, np.float32)] * W)
    with pytest.raises(RuntimeError, match="reset"):
        box_env.step(np.zeros(5, np.float32))
    box_env.reset(seed=0)  # and reset makes it usable again
    box_env.step(np.zeros(5, np.float32))


@pytest.mark.filterwarnings("ignore:.*render_mode")
@pytest.mark.parametrize("mode", ["human", "rgb_array", "ansi"])
def test_unknown_render_mode_raises(mode):
    """TypeError: what Stable-Baselines3's make_vec_env catches before retrying without render_mode."""
    with pytest.raises(TypeError, match="render_mode"):
        BudgetEnv(windows=2, render_mode=mode)
    with pytest.raises(TypeError, match="render_mode"):
        gym.make("moe2sim/Budget-v0", windows=2, render_mode=mode)


def budget_env_raw() -> dict:
    raw = yaml.safe_load(BUDGET_YAML.read_text())
    raw["data_dir"] = str(TRACES)
    return raw


@pytest.mark.parametrize("field,value,message", [
    ("energy_budget_J", [1500, 150], "energy_budget_J"),
    ("energy_budget_J", [300, 300], "energy_budget_J"),
    ("latency_scale", [2.0, 0.3], "latency_scale"),
    ("energy_budget_J", [-5, 150], "greater than 0"),
    ("windows", 0, "greater than or equal to 1"),
    ("window_s", 0, "greater than 0"),
    ("action", "continuous", "box"),
    ("discrete_levels", 1, "greater than or equal to 2"),
    ("energy_alowance_J", 1.0, "unknown key"),
])
def test_bad_env_block_raises_input_error(write_scenario, field, value, message):
    raw = budget_env_raw()
    raw["env"][field] = value
    path = write_scenario(base=raw)
    with pytest.raises(InputError, match=message) as err:
        load_scenario(path)
    assert err.value.field.startswith("env") and err.value.file == str(path)
    with pytest.raises(InputError, match=message):  # the env loads through load_scenario
        BudgetEnv(path)


def test_bad_env_override_raises_input_error():
    with pytest.raises(InputError, match="energy_budget_J"):
        load_scenario(BUDGET_YAML, ["env.energy_budget_J=[1500, 150]"])
    with pytest.raises(InputError, match="energy_budget_J"):
        BudgetEnv(overrides=["env.energy_budget_J=[1500, 150]"])


@pytest.mark.parametrize("kwargs", [dict(windows=0), dict(window_s=-1.0), dict(action="continuous")])
def test_bad_constructor_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        BudgetEnv(**kwargs)


# --- 5. Semantics of a window ----------------------------------------------------------------------

def test_truncates_after_windows_never_terminates(box_env):
    traj = rollout(box_env, 0, random_actions(4))
    assert [s[2] for s in traj[1:]] == [False] * W
    assert [s[3] for s in traj[1:]] == [False] * (W - 1) + [True]
    assert box_env.window == W


def test_info_budgets_are_the_action_budgets_unless_infeasible(box_env):
    handler = box_env.handler
    assert handler.budgets(np.full(5, -1.0)).energy_J == pytest.approx(150.0)
    actions = [np.array([0.8, 0.5, 0.5, 0.5, 0.5], np.float32), np.array([-1, 1, 1, 1, 1], np.float32),
               np.array([0.3, 0.9, -0.2, 0.4, 0.1], np.float32)] + random_actions(9, W - 3)
    traj = rollout(box_env, 1, actions)
    prev_info, prev_box = traj[0][4], box_env.handler.action_for(box_env.initial_budgets)
    prev_subset = None
    kinds = set()
    for a, (obs, _, _, _, info) in zip(actions, traj[1:]):
        kinds.add(info["infeasible"])
        if info["infeasible"]:
            assert info["energy_budget_J"] == prev_info["energy_budget_J"]
            np.testing.assert_array_equal(info["latency_budget_s"], prev_info["latency_budget_s"])
            np.testing.assert_array_equal(obs["budgets"], prev_box)
            if prev_subset is not None:
                assert info["subset"] == prev_subset
        else:
            b = handler.budgets(a)
            assert info["energy_budget_J"] == b.energy_J
            np.testing.assert_array_equal(info["latency_budget_s"], b.latency_s)
            np.testing.assert_array_equal(obs["budgets"], a)
            prev_box = a
        prev_info, prev_subset = info, info["subset"]
    assert kinds == {True, False}
    assert traj[2][4]["infeasible"]  # 150 J


def test_action_mapping_is_log_linear(box_env, disc_env):
    h = box_env.handler
    for a, energy, scale in ((-1, 150, 0.3), (0, math.sqrt(150 * 1500), math.sqrt(0.3 * 2.0)), (1, 1500, 2.0)):
        b = h.budgets(np.full(5, a, np.float32))
        assert b.energy_J == pytest.approx(energy)
        np.testing.assert_allclose(b.latency_s, scale * BASE_LATENCY)
    b = Budgets(900.0, BASE_LATENCY * np.array([0.5, 1.0, 1.5, 1.9]))
    back = h.budgets(h.action_for(b))
    assert back.energy_J == pytest.approx(900.0, rel=1e-5)
    np.testing.assert_allclose(back.latency_s, b.latency_s, rtol=1e-5)
    # Discrete(L²): index i·L + j -> i-th energy level, j-th scale level, L log-spaced levels.
    energies, scales = np.geomspace(150, 1500, 5), np.geomspace(0.3, 2.0, 5)
    for i in range(5):
        for j in range(5):
            b = disc_env.handler.budgets(disc_env.handler.box_action(i * 5 + j))
            assert b.energy_J == pytest.approx(energies[i], rel=1e-6)
            np.testing.assert_allclose(b.latency_s, scales[j] * BASE_LATENCY, rtol=1e-6)


def test_discrete_info_budgets_follow_action(disc_env):
    actions = [24, 0, 18, 19, 13, 23, 3, 24, 17, 22, 12, 18]
    traj = rollout(disc_env, 2, actions)
    prev = traj[0][4]
    for a, (obs, _, _, _, info) in zip(actions, traj[1:]):
        b = disc_env.handler.budgets(disc_env.handler.box_action(a))
        if not info["infeasible"]:
            assert info["energy_budget_J"] == b.energy_J
            np.testing.assert_array_equal(info["latency_budget_s"], b.latency_s)
            np.testing.assert_array_equal(obs["budgets"], disc_env.handler.box_action(a))
        else:
            assert info["energy_budget_J"] == prev["energy_budget_J"]
        prev = info
    assert traj[2][4]["infeasible"]  # action 0: 150 J and 0.3x


def test_infeasible_action_keeps_the_previous_subset(box_env):
    problem = box_env.twin.policy.selector.problem
    assert problem.energy_J.min() > 150.0  # 150 J is below every expert's worst case
    obs0, info0 = box_env.reset(seed=4)
    subset0 = [e.name for e, ok in zip(box_env.twin.experts, box_env.twin.policy.allowed) if ok]
    box0 = box_env.handler.action_for(box_env.initial_budgets)
    action = np.r_[-1.0, box0[1:]].astype(np.float32)
    obs, _, _, _, info = box_env.step(action)
    assert info["infeasible"] and info["subset"] == subset0
    assert info["energy_budget_J"] == 900.0 == info0["energy_budget_J"]
    np.testing.assert_array_equal(info["latency_budget_s"], BASE_LATENCY)
    np.testing.assert_array_equal(obs["budgets"], box0)
    assert info["completed"] > 0  # the window was still served, by the previous subset
    _, _, _, _, info = box_env.step(box0)
    assert not info["infeasible"]


@pytest.fixture(scope="module")
def day_without_bursts():
    """A whole day of budget_env's diurnal load (bursts off), in 24 windows of an hour, fixed budgets."""
    env = BudgetEnv(window_s=3600.0, windows=24, overrides=["arrivals.bursts=null"])
    traj = rollout(env, 0, [env.handler.action_for(env.initial_budgets)] * 24)
    return env, traj, env.records()


def test_arrival_rate_over_a_day_matches_the_diurnal_rate(day_without_bursts):
    env, traj, (queries, _) = day_without_bursts
    arr = env.scenario.arrivals
    assert arr.bursts is None and arr.amplitude == 0.8 and arr.period_s == 86_400.0
    counts = np.array([np.rint(s[0]["arrival_rate"] * 3600.0) for s in traj[1:]])  # (24, M)
    per_window = counts.sum(axis=1)
    # Every arrival is counted once, in the window it arrived in (exact, against the records).
    window_of = np.floor(queries["arrival_s"].to_numpy() / 3600.0).astype(int)
    np.testing.assert_array_equal(per_window, np.bincount(window_of, minlength=24))
    cat = queries["category"].cat.codes.to_numpy()
    for c in range(N_CATS):
        np.testing.assert_array_equal(counts[:, c], np.bincount(window_of[cat == c], minlength=24))
    # The day's total is Poisson with mean λ̄·86,400 = 21,600 (a full period of the sine adds 0):
    # sd √21,600 ≈ 147, so 4 sd ≈ 2.7 %.
    mean = arr.mean_rate_per_s * 86_400
    assert abs(per_window.sum() - mean) < 4 * math.sqrt(mean)
    # Per hour: ∫ λ̄ (1 + a sin(2π (t - φ)/P)) dt; Pearson χ² with 24 dof has mean 24, sd √48 ≈ 6.9;
    # 24 + 5 sd ≈ 59 (p ≈ 1e-4).
    t0, t1 = np.arange(24) * 3600.0, np.arange(1, 25) * 3600.0
    w = 2 * np.pi / arr.period_s
    expected = arr.mean_rate_per_s * ((t1 - t0) + arr.amplitude / w * (np.cos(w * (t0 - arr.phase_s))
                                                                      - np.cos(w * (t1 - arr.phase_s))))
    chi2 = float(((per_window - expected) ** 2 / expected).sum())
    assert chi2 < 24 + 5 * math.sqrt(48), chi2
    assert 13 <= int(per_window.argmax()) <= 16  # the peak is at 15:00 (phase 9:00 + a quarter day)


def test_time_of_day_follows_the_window_end(day_without_bursts, box_env):
    _, traj, _ = day_without_bursts
    np.testing.assert_array_equal(traj[0][0]["time_of_day"], [0.0, 1.0])
    for k, step in enumerate(traj[1:], start=1):
        phase = 2 * np.pi * k * 3600.0 / 86_400.0
        np.testing.assert_allclose(step[0]["time_of_day"], [np.sin(phase), np.cos(phase)], atol=1e-6)
    traj = rollout(box_env, 0, [np.zeros(5, np.float32)] * 3)
    for k, step in enumerate(traj[1:], start=1):
        phase = 2 * np.pi * k * 300.0 / 86_400.0
        np.testing.assert_allclose(step[0]["time_of_day"], [np.sin(phase), np.cos(phase)], atol=1e-6)


def test_energy_spent_is_cumulative_and_non_decreasing(day_without_bursts):
    env, traj, (queries, _) = day_without_bursts
    spent = np.array([s[0]["energy_spent"][0] for s in traj])
    assert spent[0] == 0 and (np.diff(spent) >= 0).all() and spent[-1] > 0
    cum = np.cumsum([s[4]["energy_J"] for s in traj[1:]])
    np.testing.assert_allclose(spent[1:], cum / env.cfg.energy_allowance_J, rtol=1e-6)
    # ... and equals the records' active energy of the answers completed within the day.
    done = queries["finish_s"].to_numpy() < 86_400.0
    assert cum[-1] == pytest.approx(queries["energy_J"].to_numpy()[done].sum(), rel=1e-9)


HEAVY = ["env.energy_allowance_J=1000", "arrivals.mean_rate_per_s=4", "env.reward.quality=2",
         "env.reward.latency_violation=0.5", "env.reward.energy_overshoot_per_kJ=0.1"]


@pytest.fixture(scope="module")
def heavy_episode():
    """Overloaded (4 queries/s), 12 windows of 2 min, a tiny energy allowance, non-unit reward weights."""
    env = BudgetEnv(window_s=120.0, windows=W, overrides=HEAVY)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-0.2, 1, 5).astype(np.float32) for _ in range(W)]
    traj = rollout(env, 1, actions)
    return env, traj, env.records()


def test_reward_is_quality_minus_lateness_minus_energy_overshoot(heavy_episode):
    env, traj, _ = heavy_episode
    r, allowance = env.cfg.reward, env.cfg.energy_allowance_J
    assert (r.quality, r.latency_violation, r.energy_overshoot_per_kJ, allowance) == (2.0, 0.5, 0.1, 1000.0)
    cum = 0.0
    terms = np.zeros(3)
    for obs, reward, _, _, info in traj[1:]:
        assert obs["energy_spent"][0] == pytest.approx((cum + info["energy_J"]) / allowance, rel=1e-6)
        after = info.get("after_end", dict.fromkeys(("correct", "late", "energy_J"), 0))  # the last step
        before, cum = cum, cum + info["energy_J"] + after["energy_J"]
        over = max(0.0, cum - allowance) - max(0.0, before - allowance)
        correct, late = info["correct"] + after["correct"], info["late"] + after["late"]
        expected = r.quality * correct - r.latency_violation * late - r.energy_overshoot_per_kJ * over / 1e3
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
        terms += [correct, late, over]
    assert (terms > 0).all(), terms  # every term was exercised
    # Summed over the episode, the energy term is the whole overshoot of the allowance.
    total_energy_term = sum(s[1] for s in traj[1:]) - r.quality * terms[0] + r.latency_violation * terms[1]
    assert total_energy_term == pytest.approx(-r.energy_overshoot_per_kJ * (cum - allowance) / 1e3, rel=1e-9)


def test_window_measurements_agree_with_the_records(heavy_episode):
    """completed/correct/late/energy, latency percentiles, utilisation and queues of each window,
    recomputed from the per-query and per-leg records."""
    env, traj, (queries, legs) = heavy_episode
    ws, slots = env.cfg.window_s, env.handler.slots
    finish = queries["finish_s"].to_numpy()
    done_in = np.floor(finish / ws)
    cat = queries["category"].cat.codes.to_numpy()
    expert = legs["expert"].cat.codes.to_numpy()
    reach = (legs["start_s"] - legs["queue_s"]).to_numpy()  # arrival + uplink
    start, end = legs["start_s"].to_numpy(), legs["end_s"].to_numpy()
    assert max(s[0]["queue"].max() for s in traj[1:]) > 10  # the heavy load does queue
    # Lateness is judged against the scenario's budgets, not the looser ones the actions set.
    late_vs_scenario = queries["latency_s"].to_numpy() > BASE_LATENCY[cat]
    late_vs_action = queries["latency_violation"].to_numpy()
    assert (late_vs_scenario & ~late_vs_action).sum() > 0  # the two differ in this episode
    for w, (obs, _, _, _, info) in enumerate(traj[1:]):
        t0, t1 = w * ws, (w + 1) * ws
        m = done_in == w
        assert info["completed"] == m.sum()
        assert info["correct"] == (m & queries["correct"].to_numpy()).sum()
        assert info["late"] == (m & late_vs_scenario).sum()
        assert info["energy_J"] == pytest.approx(queries["energy_J"].to_numpy()[m].sum(), rel=1e-9)
        assert obs["accuracy"][0] == pytest.approx(info["correct"] / max(info["completed"], 1), rel=1e-6)
        for c in range(N_CATS):
            lat = queries["latency_s"].to_numpy()[m & (cat == c)]
            for key, q in (("latency_p50", 50), ("latency_p95", 95)):
                want = np.percentile(lat, q) if len(lat) else 0.0
                assert obs[key][c] == pytest.approx(want, rel=1e-6)
        busy = np.bincount(expert, weights=np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0, None),
                           minlength=N_EXPERTS)
        np.testing.assert_allclose(obs["utilisation"], busy / (slots * ws), atol=1e-6)
        waiting = (reach < t1) & (start >= t1)
        np.testing.assert_array_equal(obs["queue"], np.bincount(expert[waiting], minlength=N_EXPERTS))


REQUIRED_QUERY_COLUMNS = ["query_id", "category", "prompt_id", "arrival_s", "finish_s", "latency_s",
                          "prompt_tokens", "output_tokens", "experts", "k", "score", "correct", "energy_J",
                          "latency_budget_s", "latency_violation", "energy_violation", "subset",
                          "predicted_worst_delay_s", "predicted_worst_energy_J"]  # traces/README.md
LEG_COLUMNS = list(records.LEG_COLUMNS)


def test_records_carry_the_budgets_in_force_at_arrival(box_env):
    actions = random_actions(11)
    traj = rollout(box_env, 6, actions)
    queries, legs = box_env.records()
    assert set(REQUIRED_QUERY_COLUMNS) <= set(queries.columns)
    assert list(legs.columns) == LEG_COLUMNS
    assert list(queries["category"].cat.categories) == [c.name for c in box_env.scenario.categories]
    assert not queries["finish_s"].isna().any()  # records() let the queries in flight finish
    # One row per arrival of the episode, and k legs per query.
    assert len(queries) == sum(int(np.rint(s[0]["arrival_rate"] * 300.0).sum()) for s in traj[1:])
    assert (legs.groupby("query_id").size().to_numpy() == queries["k"].to_numpy()).all()
    window = np.floor(queries["arrival_s"].to_numpy() / 300.0).astype(int)
    assert window.max() == W - 1
    cat = queries["category"].cat.codes.to_numpy()
    infos = [s[4] for s in traj[1:]]
    want_latency = np.array([infos[w]["latency_budget_s"][c] for w, c in zip(window, cat)])
    np.testing.assert_array_equal(queries["latency_budget_s"].to_numpy(), want_latency)
    np.testing.assert_array_equal(queries["energy_budget_J"].to_numpy(),
                                  [infos[w]["energy_budget_J"] for w in window])
    np.testing.assert_array_equal(queries["subset"].to_numpy(), ["|".join(infos[w]["subset"]) for w in window])
    assert len({tuple(i["latency_budget_s"]) for i in infos}) > 3  # the budgets did change


def test_records_mid_episode_leaves_the_episode_intact(box_env):
    """records() is for a finished episode. BUG: called mid-episode it runs the simulation to the end
    of the horizon (sim.advance() with no bound pulls every future arrival, routed with the current
    budgets), and the next step() fails inside SimPy ("until (…) must be greater than the current
    simulation time"). It should refuse (RuntimeError) until the episode has ended, or leave it intact."""
    actions = random_actions(12)
    reference = rollout(box_env, 9, actions)
    box_env.reset(seed=9)
    steps = [box_env.step(a) for a in actions[:3]]
    try:
        box_env.records()
    except RuntimeError:
        pass  # refusing is fine
    steps += [box_env.step(a) for a in actions[3:]]
    assert_same(steps, reference[1:])


# --- 6. Training smoke test ------------------------------------------------------------------------

def test_ppo_trains_on_the_discrete_env():
    sb3 = pytest.importorskip("stable_baselines3", reason="stable-baselines3 not installed")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-layer MLP: extra threads only contend (2.5x slower on 2 cores)
    try:
        env = BudgetEnv(windows=16, action="discrete")
        model = sb3.PPO("MultiInputPolicy", env, n_steps=500, batch_size=100, n_epochs=2, seed=0, device="cpu",
                        verbose=0, policy_kwargs=dict(net_arch=[32, 32]))
        model.learn(total_timesteps=2_000)
        assert model.num_timesteps == 2_000
        obs, _ = env.reset(seed=1)
        for step in range(1, 17):
            action, _ = model.predict(obs, deterministic=True)
            assert env.action_space.contains(int(action))
            obs, reward, terminated, truncated, info = env.step(int(action))
            assert np.isfinite(reward) and not terminated and truncated == (step == 16)
    finally:
        torch.set_num_threads(threads)
