"""Generated bad (and good) inputs for the `moe2sim` command, shared by tests/test_bad_inputs.py (small,
derandomized sample in CI) and benchmarks/bench_bad_inputs.py (a bigger sample, counted).

Each case writes its inputs into a fresh folder, runs the real CLI in-process (moe2sim.cli.main) under an
alarm, and classifies what a user would see:
    exit2  exit code 2 and exactly one stderr line `moe2sim: error: <file or flag>: ...`
    exit0  exit code 0 and valid outputs (strict JSON summary, a manifest, the report if asked for)
    other  anything else: a traceback, another exit code, several lines, invalid JSON, a hang
Every case is bounded: scenarios run only when they are small (few queries), flags never ask for long work.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from hypothesis import strategies as st

from moe2sim.cli import main
from moe2sim.data.outcomes import OutcomeFile, read_outcomes
from moe2sim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "traces"
LIMIT_S = 120          # an alarm per CLI call: a case that takes longer counts as a hang
MAX_RUN_QUERIES = 200  # a valid scenario is also run when it asks for at most this many queries
ERROR_LINE = re.compile(r"^moe2sim: error: (?:argument )?\S.*: \S")


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so no handler in the code under test can swallow it."""


@dataclass(frozen=True)
class Outcome:
    kind: str      # exit0 | exit2 | other
    detail: str    # the error line, or what was wrong

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@contextlib.contextmanager
def alarm(seconds: int) -> Iterator[None]:
    def ring(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(args: list[str]) -> tuple[int, str, str]:
    """Run `moe2sim ARGS` in this process: (exit code, stdout, stderr); a traceback propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), alarm(LIMIT_S):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def strict_json(text: str) -> Any:
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def classify(code: int, stderr: str, out_dir: Path | None = None) -> Outcome:
    """What the user saw, as exit0 / exit2 / other (see the module docstring)."""
    lines = stderr.strip().splitlines()
    if code == 2:
        if len(lines) == 1 and ERROR_LINE.match(lines[0]):
            return Outcome("exit2", lines[0])
        return Outcome("other", f"exit 2 but stderr is {stderr!r}")
    if code != 0:
        return Outcome("other", f"exit {code}: {stderr[-300:]!r}")
    if out_dir is not None:
        problem = check_outputs(out_dir)
        if problem:
            return Outcome("other", problem)
    return Outcome("exit0", "ok")


def check_outputs(out: Path) -> str | None:
    """None if a run's folder holds valid outputs, else what is wrong."""
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if ".moe2sim-manifest.json" not in names:
        return f"no manifest in {out} ({sorted(names)})"
    for name in names & {"summary.json"}:
        try:
            summary = strict_json((out / name).read_text())
        except ValueError as exc:
            return f"{name}: {exc}"
        if not isinstance(summary, dict) or "queries" not in summary:
            return f"{name}: not a summary"
    return None


def run_case(args: list[str], out_dir: Path | None = None) -> Outcome:
    """The CLI on `args`, classified; a traceback or a hang is `other` with its last line."""
    try:
        code, _, err = cli(args)
    except Hang as exc:
        return Outcome("other", f"hang: {exc}")
    except Exception as exc:  # a traceback a user would see
        return Outcome("other", f"traceback: {type(exc).__name__}: {exc}"[:400])
    return classify(code, err, out_dir)


# --- generated values ------------------------------------------------------------------------------

PATHS = ["", ".", "..", "../../x", "/nonexistent/file.yaml", "a" * 300, "~", "/", "/dev/null",
         str(TRACES / "prompts.parquet"), str(TRACES / "profiles"), "nul\0byte", "quickstart", "ünï/cödé"]
NUMBERS = [0, -1, 1, 2, 2**63, -2**63, 10**12, 10**30, 0.5, -0.0, 1e-300, 5e-324, 1e300,
           float("inf"), float("-inf"), float("nan")]

values = st.one_of(
    st.sampled_from(NUMBERS), st.sampled_from(PATHS), st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70), st.floats(), st.text(max_size=12),
    st.lists(st.sampled_from(NUMBERS + ["x"]), max_size=3),
    st.dictionaries(st.sampled_from(["value", "x", "name", "dist", "process"]), st.sampled_from(NUMBERS + ["a"]),
                    max_size=2),
)


def tree_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a YAML tree (keys and list indices), the root excluded."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found += tree_paths(child, (*prefix, key))
    return found


def _parent(tree: Any, path: tuple) -> Any:
    for key in path[:-1]:
        tree = tree[key]
    return tree


def _set(tree, path, value):
    _parent(tree, path)[path[-1]] = value


def _delete(tree, path, value):
    del _parent(tree, path)[path[-1]]


def _add(tree, path, value):
    parent = _parent(tree, path)
    if isinstance(parent, dict):
        parent["unknown_key"] = value
    else:
        parent.append(value)


def _retype(tree, path, value):
    old = _parent(tree, path)[path[-1]]
    _parent(tree, path)[path[-1]] = str(old) if not isinstance(old, str) else [old]


def _scale(tree, path, value):
    old = _parent(tree, path)[path[-1]]
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        factor = value if isinstance(value, (int, float)) and not isinstance(value, bool) else -1
        try:
            _parent(tree, path)[path[-1]] = old * factor
        except OverflowError:
            _parent(tree, path)[path[-1]] = float("inf")


MUTATIONS: dict[str, Callable[[Any, tuple, Any], None]] = {
    "set": _set, "delete": _delete, "add": _add, "retype": _retype, "scale": _scale}


@st.composite
def mutated(draw, base: dict, max_mutations: int = 3) -> tuple[dict, list[str]]:
    """`base` with 1..max_mutations generated edits; returns the tree and a description of the edits."""
    tree = copy.deepcopy(base)
    done = []
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = tree_paths(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(sorted(MUTATIONS)))
        value = draw(values)
        MUTATIONS[op](tree, path, value)
        done.append(f"{op} {'.'.join(map(str, path))} {value!r}"[:120])
    return tree, done


def base_scenario() -> dict:
    """quickstart, small: 40 queries, data from the repository's traces."""
    raw = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    raw.update(data_dir=str(TRACES), queries=40)
    return raw


def dump(tree: Any) -> str:
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


def small(raw: Any) -> bool:
    """Whether a scenario is cheap to simulate: a `queries` count within MAX_RUN_QUERIES, no sweep."""
    return (isinstance(raw, dict) and isinstance(raw.get("queries"), int) and raw["queries"] <= MAX_RUN_QUERIES
            and raw.get("sweep") is None)


def scenario_case(text: str | bytes, runnable: bool) -> Outcome:
    """validate a scenario file, then (if it passed and is `runnable`) run it: validate must refuse whatever
    run refuses, so a scenario validate accepts must run (exit 0) with valid outputs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        out = Path(tmp) / "out"
        checked = run_case(["validate", str(path), "--out", str(out)])
        if checked.kind != "exit0" or not runnable:
            return checked
        ran = run_case(["run", str(path), "--out", str(out), "--quiet"], out)
        if ran.kind == "exit2":
            return Outcome("other", f"validate accepted what run refused: {ran.detail}")
        return ran


def profile_case(profile: dict | str) -> Outcome:
    """A scenario whose first expert uses the given device profile: validate, then run."""
    with tempfile.TemporaryDirectory() as tmp:
        prof = Path(tmp) / "device.yaml"
        prof.write_text(profile if isinstance(profile, str) else dump(profile), encoding="utf-8")
        raw = base_scenario()
        raw["experts"][0]["profile"] = str(prof)
        return scenario_case(dump(raw), runnable=True)


def replay_case(csv_text: str, time_scale: float = 1.0) -> Outcome:
    """A scenario whose arrivals replay the given CSV text: validate, then run."""
    with tempfile.TemporaryDirectory() as tmp:
        arrivals = Path(tmp) / "arrivals.csv"
        arrivals.write_text(csv_text, encoding="utf-8")
        raw = base_scenario()
        raw["arrivals"] = {"process": "replay", "file": str(arrivals), "time_scale": time_scale}
        return scenario_case(dump(raw), runnable=True)


def outcome_file_case(content: str | bytes) -> Outcome:
    """read_outcomes (what `moe2sim embed` reads first) on a generated file: records or one InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outcomes.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        try:
            read_outcomes(OutcomeFile("task", "train", path))
        except InputError as exc:
            text = str(exc)
            ok = str(path) in text and "\n" not in text
            return Outcome("exit2" if ok else "other", text)
        except Exception as exc:
            return Outcome("other", f"traceback: {type(exc).__name__}: {exc}"[:400])
        return Outcome("exit0", "ok")


def flags_case(args: list[str]) -> Outcome:
    """The CLI on generated flags (outputs, if any, under a fresh folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        full = [a.replace("{tmp}", tmp) for a in args]
        writes = "--out" in full and full[0] in ("run", "sweep", "rollout")
        return run_case(full, Path(full[full.index("--out") + 1]) if writes else None)


# --- outcome files ----------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**20), st.floats(), st.text(max_size=8))
record = st.fixed_dictionaries({"question": st.one_of(st.text(max_size=20), json_scalars),
                                "scores": st.one_of(st.dictionaries(st.text(max_size=6), json_scalars, max_size=3),
                                                    json_scalars)})
outcome_content = st.one_of(
    st.lists(record, max_size=4).map(lambda r: json.dumps(r, allow_nan=True)),
    st.lists(st.one_of(record, json_scalars), max_size=3).map(lambda r: json.dumps(r, allow_nan=True)),
    json_scalars.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(1, 2000).map(lambda n: "[" * n + "]" * n),
)


# --- CLI flags --------------------------------------------------------------------------------------

valid_budget = st.sampled_from(["400", "900", "1e3", "2"])
flag_numbers = st.one_of(st.sampled_from(["-1", "0", "1", "2", "-1e3", "1e400", "nan", "inf", "-inf", "0x10",
                                          "1_000", " 3", "", "abc", "½", "3.5", "1e-320", "99999999999999999999"]),
                         st.integers(-5, 5).map(str), st.text(max_size=6))
flag_lists = st.one_of(flag_numbers, st.lists(flag_numbers, min_size=1, max_size=3).map(",".join))
method_names = st.one_of(st.sampled_from(["moe2", "random", "best_single", "foo", "", "moe2,foo", ",", "MOE2"]),
                         st.text(max_size=6))
pairs = st.one_of(st.sampled_from(["mmlu=abc", "mmlu=1", "mmlu=-1", "mmlu=", "=3", "nope=3", "mmlu=3", "x",
                                   "mmlu=nan", "gsm8k=1e400", "mmlu=2"]),
                  st.tuples(st.text(max_size=5), flag_numbers).map("=".join))
set_values = st.one_of(st.sampled_from(["policy.k=[", "policy.k=0", "policy.k=99", "seed=-1", "name=../x",
                                        "queries=0", "=1", "nokey", "experts.9.slots=1", "experts.0=", "a.b.c=1",
                                        "policy.name=nope", "energy_budget_J=.nan", "duration_s=1e300",
                                        "categories.mmlu.mix=.inf", "experts.mistral-7b.slots=2"]),
                       st.tuples(st.text(max_size=8), st.text(max_size=8)).map("=".join))

QUICK = ["--set", "queries=30"]


@st.composite
def cli_args(draw) -> list[str]:
    """One command with generated flag values; only short work if the values happen to be valid."""
    command = draw(st.sampled_from(["select", "sweep", "run", "validate", "rollout", "eval-gate", "train-gate",
                                    "top"]))
    builders: dict[str, Callable[[], list[str]]] = {
        "select": lambda: ["select", "quickstart", *QUICK,
                           *draw(st.sampled_from([[], ["--json"]])),
                           *draw(st.one_of(st.just([]), st.one_of(valid_budget, flag_numbers).map(
                               lambda v: ["--energy-budget", v]))),
                           *draw(st.one_of(st.just([]), pairs.map(lambda v: ["--latency-budget", v]))),
                           *draw(st.one_of(st.just([]), method_names.map(lambda v: ["--method", v])))],
        "sweep": lambda: ["sweep", "quickstart", *QUICK, "--set", "sweep.simulate=false", "--jobs",
                          draw(st.sampled_from(["1", "0", "-1", "x"])), "--out", "{tmp}/out", "--quiet",
                          "--methods", draw(st.one_of(st.just("moe2"), method_names)),
                          *draw(st.one_of(valid_budget, flag_lists).map(lambda v: ["--energy-budgets", v])),
                          *draw(st.one_of(st.just([]), flag_lists.map(lambda v: ["--latency-scales", v])))],
        "run": lambda: ["run", "quickstart", "--out", draw(st.sampled_from(["{tmp}/out", "{tmp}", "/dev/null",
                                                                             "{tmp}/" + "a" * 300, "{tmp}/nul\0x"])),
                        *QUICK, "--quiet", "--seed", draw(st.one_of(st.just("1"), flag_numbers)),
                        "--set", draw(st.one_of(st.just("policy.k=1"), set_values))],
        "validate": lambda: ["validate", draw(st.sampled_from(["quickstart", "paper", "nope", "", "{tmp}",
                                                               "/dev/null", "a" * 400])),
                             "--out", "{tmp}/out", "--set", draw(set_values)],
        "rollout": lambda: ["rollout", draw(st.sampled_from(["budget_env", "quickstart"])), "--out", "{tmp}/out",
                            "--set", "env.window_s=20", "--windows",
                            draw(st.one_of(st.sampled_from(["1", "0", "-2"]), flag_numbers.filter(
                                lambda v: not v.strip().isdigit() or int(v) <= 2))),
                            "--agent", draw(st.sampled_from(["fixed", "rule", "nope", "{tmp}", ""]))],
        "eval-gate": lambda: ["eval-gate", *draw(st.sampled_from([[], ["--data", "{tmp}"], ["--gate", "/dev/null"]])),
                              "--options", draw(pairs)],
        "train-gate": lambda: ["train-gate", "--out", draw(st.sampled_from(["{tmp}", "{tmp}/g.pt", "/dev/null/g.pt"])),
                               "--epochs", draw(st.one_of(st.just("1"), flag_numbers.filter(
                                   lambda v: not v.strip().lstrip("+").isdigit() or int(v) <= 1))),
                               "--hidden", draw(st.sampled_from(["8", "0", "-4", "x"])),
                               "--seed", draw(flag_numbers)],
        "top": lambda: draw(st.lists(st.one_of(st.sampled_from(["--version", "--help", "run", "-x", "--", "-1"]),
                                               st.text(max_size=5)), max_size=3)),
    }
    return builders[command]()


# --- the registry: what the test suite and the benchmark generate --------------------------------------

raw_scenario_content = st.one_of(
    st.binary(max_size=60), st.text(max_size=60),
    st.sampled_from([b"\xff\xfe name: x", b"a: &a [*a]", b"[" * 5000, b"name: [", b"- 1\n- 2", b"name: x\nname: y",
                     b"!!python/object:os.system {}", b"", b"~", b"queries: 1e999"]))


def profile_base() -> dict:
    return yaml.safe_load((TRACES / "profiles" / "rtx4090-8b-q4.yaml").read_text())


csv_cells = st.one_of(st.sampled_from(["0", "1", "2.5", "-1", "inf", "nan", "1e300", "", "abc", "mmlu", "nope",
                                       "1e12", "3"]), st.text(alphabet="0123456789.-e,\"", max_size=5))
replay_inputs = st.tuples(
    st.sampled_from(["time_s", "time_s,category", "category", "time", ""]),
    st.lists(st.tuples(csv_cells, st.sampled_from(["mmlu", "gsm8k", "nope", "", "1"])), max_size=5),
    st.sampled_from([1.0, 1e-9, 1e12, 0.5]))


def replay_text(header: str, rows: list[tuple[str, str]]) -> str:
    two = "," in header
    return f"{header}\n" + "".join(f"{t},{c}\n" if two else f"{t}\n" for t, c in rows)


@dataclass(frozen=True)
class Case:
    strategy: st.SearchStrategy
    run: Callable[[Any], Outcome]
    ci_examples: int   # examples per CI run (tests/test_bad_inputs.py)


CASES: dict[str, Case] = {
    "scenario mutations": Case(mutated(base_scenario()), lambda c: scenario_case(dump(c[0]), small(c[0])), 80),
    "scenario bytes": Case(raw_scenario_content, lambda c: scenario_case(c, runnable=False), 40),
    "profile mutations": Case(mutated(profile_base(), max_mutations=2), lambda c: profile_case(c[0]), 30),
    "replay files": Case(replay_inputs, lambda c: replay_case(replay_text(c[0], c[1]), c[2]), 30),
    "outcome files": Case(outcome_content, outcome_file_case, 150),
    "CLI flags": Case(cli_args(), flags_case, 80),
}
