"""The `moe2sim` command. Each sub-command parses its flags, calls one library function and prints.
Bad input: one line naming the file or flag and the field, exit code 2, no traceback; Ctrl-C:
exit 130 with one line. Library modules are imported inside the commands, so `--help` is fast."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moe2sim import __version__
from moe2sim.cli.argtypes import (HelpFormatter, at_least, attach_values, positive_float, positive_floats,
                                  value_flags, whole)
from moe2sim.errors import InputError

POSITIVE_INT = at_least(1)  # argparse type: a whole number >= 1
FOLDS = at_least(2)  # argparse type: a number of cross-fitting folds
MAX_REPLICATIONS = 10_000  # each replication keeps its summary in memory


def _print_table(rows: list[list[object]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(r, widths)))


def _output(args: argparse.Namespace, default: Path):
    from moe2sim.report.outputs import OutputDir

    return OutputDir(Path(args.out) if args.out else default, "--out", args.allow_existing)


def cmd_validate(args: argparse.Namespace) -> int:
    """What `run` checks before simulating, and nothing more: the scenario, every file it names (traces,
    profiles, replay files, the gate) as the twin reads them, the budgets, and the output location."""
    from moe2sim.experiments.run import preflight
    from moe2sim.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.set)
    out = _output(args, Path("runs") / scenario.name)
    preflight(scenario, out)  # reads traces, profiles, replay files, the gate; draws the first arrivals
    print(f"{args.scenario}: ok ({len(scenario.experts)} experts, {len(scenario.categories)} categories; "
          f"output {out.path}/ writable)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from moe2sim.experiments.run import run_scenario
    from moe2sim.report.pages.run import SUMMARY_HEADER, summary_rows, unreliable_note
    from moe2sim.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.set)
    out = _output(args, Path("runs") / scenario.name)
    _check_backend(args)
    summary = run_scenario(scenario, out, seed=args.seed, progress=not args.quiet, replications=args.replications,
                           executor_name=args.backend, jobs=args.jobs, address=args.address)
    _print_table(summary_rows(summary), SUMMARY_HEADER)
    print(f"intervals: 95 % ({summary['interval_method']}){unreliable_note(summary)}")
    print(f"energy total {summary['energy_J_total'] / 1e3:.1f} kJ "
          f"(idle {summary['energy_J_idle_total'] / 1e3:.1f} kJ) over {summary['run_s']:.0f} s; wrote {out.path}/")
    print("energy boundary per expert: " + ", ".join(f"{n} {b}" for n, b in summary["energy_boundaries"].items()))
    if summary["energy_boundary_note"]:
        print(f"warning: {summary['energy_boundary_note']}")
    if summary["energy_boundary_reason"]:
        print(f"note: {summary['energy_boundary_reason']}")
    return 0


def _strict_json(obj) -> str:
    """JSON for --json: no NaN or Infinity (they become null), as every JSON moe2sim writes."""
    from moe2sim.data.strict import dumps

    return dumps(obj, indent=2)


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    """NAME=VALUE flag values as pairs; anything else is an error naming the flag."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(flag, item, "expected NAME=VALUE")
        out.append((key.strip(), value.strip()))
    return out


def _checked(flag: str, item: str, text: str, parse) -> object:
    """`parse(text)` (an argparse type), its error as an InputError naming the flag and the item."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise InputError(flag, item, str(exc)) from None


def _scoring_rule(text: str) -> str:
    """An argparse type: a scoring rule (data/quality.SCORING_RULES)."""
    from moe2sim.data.quality import SCORING_RULES

    if text not in SCORING_RULES:
        raise argparse.ArgumentTypeError(f"unknown scoring rule {text!r}; use threshold or expected")
    return text


def _task_values(items: list[str], flag: str, parse) -> dict[str, object]:
    """TASK=VALUE flags as {task: parse(value)}, each error naming the flag and the item."""
    return {task: _checked(flag, f"{task}={value}", value, parse) for task, value in _pairs(items, flag)}


def _print_check(data: Path) -> None:
    from moe2sim.routing.data_check import check_data

    print(f"data check of {data}/:")
    print(check_data(data).format())


def cmd_embed(args: argparse.Namespace) -> int:
    from moe2sim.data.outcomes import DATA_FILES, OutcomeFile, write_data_folder
    from moe2sim.data.scoring import declarations

    sources = [OutcomeFile(task, split, Path(f)) for split, flag in (("train", "--train"), ("test", "--test"))
               for task, f in _pairs(getattr(args, split), flag)]
    declared = declarations(Path(args.tasks) if args.tasks else None,
                            _task_values(args.scoring, "--scoring", _scoring_rule),
                            _task_values(args.options, "--options", _options_count))
    output = _output(args, Path(args.out))
    output.check(DATA_FILES)  # before any work: a user's files in the folder are never overwritten
    with output.staged() as stage:
        folder = write_data_folder(sources, stage, args.embed_tail, progress=not args.quiet, declared=declared)
    for warning in folder.warnings:
        print(f"moe2sim: warning: {warning}", file=sys.stderr)
    for note in folder.notes:
        print(f"note: {note}")
    for rule in folder.rules:
        print(rule)
    dropped = f"; {folder.dropped} prompts dropped for a missing outcome" if folder.dropped else ""
    cost = "; per-model cost kept" if folder.with_cost else ""
    print(f"{folder.prompts} prompts, {folder.models} models, embeddings {folder.dim}-d{dropped}{cost} -> {args.out}/")
    _print_check(Path(args.out))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from moe2sim.routing.data_check import check_data

    check = check_data(Path(args.data))
    if args.json:
        print(_strict_json({"tasks": [f.__dict__ for f in check.figures], "flags": [f.__dict__ for f in check.flags]}))
    else:
        print(check.format())
    return 1 if args.strict and check.flags else 0


def cmd_train_gate(args: argparse.Namespace) -> int:
    from moe2sim.routing.evaluation import train_on
    from moe2sim.routing.gate import TrainConfig

    data = Path(args.data)
    out = Path(args.out) if args.out else data / ("gate_crossfit.npz" if args.cross_fit else "gate.pt")
    _check_file_out(out, "--out" if args.out else "--data")
    config = TrainConfig(loss=args.loss, seed=args.seed, hidden=args.hidden, max_epochs=args.epochs)
    if args.cross_fit:
        from moe2sim.routing.evaluation import cross_fit_on

        cross_fit_on(data, config, args.cross_fit, args.fold_seed).save(out)
        print(f"cross-fitted logits of every train prompt ({args.cross_fit} folds, fold seed {args.fold_seed}) -> {out}")
        return 0
    gate = train_on(data, config)
    gate.save(out)
    info = gate.info
    verdict = (f"epoch {info['best_epoch']} of {info['epochs_run']}" if info["beat_prior"] else
               "the residual never beat the task-posterior prior on validation: the prior alone is kept")
    print(f"gate over {len(gate.experts)} experts, {len(gate.tasks)} tasks: validation k=1 task-mean accuracy "
          f"{info['val_task_mean_accuracy']:.3f} (prior alone {info['val_prior_only_accuracy']:.3f}; {verdict}; "
          f"{info['train_seconds']} s) -> {out}")
    _print_check(data)
    return 0


def _check_file_out(path: Path, flag: str) -> None:
    """Before any work: a file to write must not be a folder, and its folder must be writable."""
    import os

    from moe2sim.report.outputs import usable_name

    usable_name(path, flag)
    if path.is_dir():
        raise InputError(flag, str(path), "is a folder: give the path of the file to write, e.g. DIR/gate.pt")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(flag, str(path), f"cannot write into {parent}")


def cmd_eval_gate(args: argparse.Namespace) -> int:
    from moe2sim.routing.evaluation import evaluate, format_table, leave_task_out
    from moe2sim.routing.gate import Gate, TrainConfig

    data = Path(args.data)
    if args.leave_task_out:
        table = leave_task_out(data, TrainConfig(seed=args.seed))
        print(json.dumps(table, indent=2) if args.json else format_table(table))
        return 0
    gate = Gate.load(Path(args.gate) if args.gate else data / "gate.pt")
    options = {t: _checked("--options", f"{t}={m}", m, _options_count) for t, m in _pairs(args.options, "--options")}
    table = evaluate(gate, data, options)
    print(_strict_json(table) if args.json else format_table(table))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from moe2sim.experiments.select import select_subset
    from moe2sim.scenario import load_scenario

    flags = [("--latency-budget", f"categories.{cat}.latency_budget_s="
              f"{_checked('--latency-budget', f'{cat}={value}', value, positive_float)}")
             for cat, value in _pairs(args.latency_budget, "--latency-budget")]
    if args.energy_budget is not None:
        flags.append(("--energy-budget", f"energy_budget_J={args.energy_budget}"))
    if args.method is not None:
        flags.append(("--method", f"policy.selection.method={json.dumps(args.method)}"))
    scenario = load_scenario(args.scenario, args.set, flags)
    try:
        out = select_subset(scenario)
    except InputError as exc:  # budgets no subset meets: name the flags that set them
        budget_flags = list(dict.fromkeys(f for f, _ in flags if f != "--method"))
        if exc.field != "budgets" or not budget_flags:
            raise
        raise InputError(" / ".join(budget_flags), None, exc.message) from None
    if args.json:
        print(_strict_json(out))
        return 0
    print(f"subset  {', '.join(out['subset'])}   (method {out['method']}, top-{out['k']})")
    print(f"U(S)    {out['U']:.4f} ± {out['U_se']:.4f}  accuracy of the gate restricted to S on the "
          f"{out['U_source']} ({out['U_prompts']} prompts), routed from the {out['routing']}")
    for row in out["compared"][1:]:
        print(f"        {row['U']:.4f} ± {row['U_se']:.4f}  {', '.join(row['subset'])} ({row['role']}; "
              f"{row['U_minus_chosen']:+.4f} ± {row['U_minus_chosen_se']:.4f} paired, "
              f"{row['worst_case_energy_J']:.0f} J)")
    print(f"binding {', '.join(out['binding']) or 'none: every expert is selected'}")
    print(f"solver  {out['sets_evaluated']} sets evaluated in {out['solver_seconds'] * 1e3:.2f} ms "
          f"(of {out['subsets_total']} subsets)")
    print(f"energy  worst case {out['worst_case_energy_J']:.1f} J of {out['energy_budget_J']:.1f} J")
    for cat, d in out["worst_case_delay_s"].items():
        print(f"latency {cat:14s} worst case {d:.3f} s of {out['latency_budget_s'][cat]:.3f} s")
    return 0


# sweep's list flags and the scenario fields they set
SWEEP_FLAGS = {"energy_budgets": ("--energy-budgets", "sweep.energy_budget_J"),
               "latency_scales": ("--latency-scales", "sweep.latency_scale"),
               "methods": ("--methods", "sweep.methods")}


def _check_backend(args: argparse.Namespace) -> None:
    """--address only with --backend ray; Ray not installed, or nothing answering at --address: one line, exit 2,
    before anything is built."""
    if args.address is not None and args.backend != "ray":
        raise InputError("--address", args.address, "only the ray backend connects to a cluster (add --backend ray)")
    if args.backend == "ray":
        from moe2sim.experiments.executors import import_ray, reachable

        import_ray()
        if args.address is not None:
            reachable(args.address)


def cmd_sweep(args: argparse.Namespace) -> int:
    from moe2sim.experiments.sweep import sweep_to
    from moe2sim.report.sweep_table import comparison, versus_moe2
    from moe2sim.scenario import load_scenario

    flags = [(flag, f"{key}={json.dumps(getattr(args, dest))}") for dest, (flag, key) in SWEEP_FLAGS.items()
             if getattr(args, dest) is not None]
    scenario = load_scenario(args.scenario, args.set, flags)
    if scenario.sweep is None or not (scenario.sweep.energy_budget_J or scenario.sweep.latency_scale):
        raise InputError(args.scenario, "sweep", "nothing to sweep: give --energy-budgets and/or --latency-scales")
    _check_backend(args)
    out = _output(args, Path("runs") / f"{scenario.name}-sweep")
    df, diffs = sweep_to(scenario, out, jobs=args.jobs, progress=not args.quiet, replications=args.replications,
                         executor_name=args.backend, address=args.address)
    table = comparison(df)
    if table.empty:
        print("no method found a subset within the budgets at any sweep point (see the report's table)")
    else:
        print("mean test accuracy over the budget points where each method keeps the budgets:")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    versus = versus_moe2(df)
    if not versus.empty:
        print("\nMoE² against each baseline, over the points where both keep the budgets:")
        print(versus.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    paired = f", {out.path}/paired.csv (MoE² − baseline, 95 % intervals over {args.replications} replications)" \
        if args.replications >= 2 else ""
    print(f"wrote {out.path}/sweep.csv{paired} and {out.path}/report.html")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from moe2sim.experiments.run import rollout
    from moe2sim.report.pages.run import SUMMARY_HEADER, summary_rows
    from moe2sim.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.set)  # bad input fails here, before anything is built
    if scenario.env is None:  # an episode is env.windows × env.window_s long: queries/duration_s would be ignored
        raise InputError(scenario.file, "env", "the scenario has no env block (window_s, windows, action), so it "
                         "defines no episode: add one, or simulate it with `moe2sim run`")
    out = _output(args, Path("runs") / f"rollout-{Path(args.agent).stem}")
    summary = rollout(args.scenario, args.set, args.agent, out, args.seed, args.windows)
    _print_table(summary_rows(summary), SUMMARY_HEADER)
    print(f"agent {args.agent}: episode reward {summary['episode_reward']:.1f} over {summary['windows']} windows; "
          f"wrote {out.path}/")
    return 0


def _options_count(text: str) -> int:
    """The number of choices of a multiple-choice task: a whole number >= 2."""
    value = whole(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"a multiple-choice task has at least 2 choices, got {value}")
    return value


def _seed(text: str) -> int:
    """An argparse type: a seed in [0, 2^63)."""
    value = whole(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63), got {value}")
    return value


def _names(text: str) -> list[str]:
    """An argparse type: comma-separated names (at least one)."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


class Parser(argparse.ArgumentParser):
    """Bad flags: one line naming the command and the flag, exit 2 (as for every other input error)."""

    def error(self, message: str):
        self.exit(2, f"moe2sim: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="moe2sim", description="Simulator and digital twin of MoE² edge LLM serving",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"moe2sim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    overrides = dict(action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. policy.k=3 or categories.gsm8k.latency_budget_s=5")
    replications = dict(type=at_least(1, MAX_REPLICATIONS), default=1, metavar="R",
                        help=f"independent replications, 1 to {MAX_REPLICATIONS:,} (seeds: the scenario seed + 0..R-1); "
                             "every metric gets a 95 %% Student-t interval across them (R = 1: sectioning within the "
                             "run, flagged where the run is too short to trust it)")
    backend_flag = dict(choices=["local", "ray"], default="local",
                        help="local: a process pool on this machine; ray: a Ray cluster (extra: pip install "
                             "'moe2sim[ray]')")
    address_flag = dict(help="Ray cluster address, e.g. auto or ray://HEAD:10001 (default: start a local Ray "
                             "instance on this machine)")
    allow = dict(action="store_true", help="write into a non-empty folder moe2sim did not write (its files are "
                                            "never overwritten or deleted)")
    scenario_help = "a scenario YAML file, or a bundled scenario's name: quickstart, paper, budget_env"

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        p.set_defaults(func=func)
        return p

    p = command("validate", cmd_validate, "check a scenario, the files it names and the output folder, without "
                                          "running: what run would refuse, validate refuses")
    p.add_argument("scenario", help=scenario_help)
    p.add_argument("--out", help="output folder to check (default: runs/<scenario name>, as run)")
    p.add_argument("--set", **overrides)
    p.add_argument("--allow-existing", **allow)

    p = command("run", cmd_run, "simulate a scenario; write per-query records, summary.json, report.html")
    p.add_argument("scenario", help=scenario_help)
    p.add_argument("--out", help="output folder (default: runs/<scenario name>)")
    p.add_argument("--seed", type=_seed, help="override the scenario seed, in [0, 2^63) (default: the scenario's)")
    p.add_argument("--replications", **replications)
    p.add_argument("--backend", **backend_flag)
    p.add_argument("--address", **address_flag)
    p.add_argument("--jobs", type=POSITIVE_INT, help="workers for replications and the scenario's sweep "
                                                      "(default: all cores; ray: all CPUs of the cluster)")
    p.add_argument("--set", **overrides)
    p.add_argument("--allow-existing", **allow)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("select", cmd_select, "solve MoE²'s coarse level: the best expert subset within the budgets")
    p.add_argument("scenario", help=scenario_help)
    p.add_argument("--energy-budget", type=positive_float, metavar="J",
                   help="per-query energy budget, J > 0 (default: the scenario's)")
    p.add_argument("--latency-budget", action="append", default=[], metavar="CAT=S",
                   help="a category's latency budget, s > 0; repeat per category (default: the scenario's)")
    p.add_argument("--method", help="selection method (default: the scenario's, significant if it has none): "
                                    "significant, near_best, monotone, exact, exhaustive, significant_exhaustive, "
                                    "near_best_exhaustive, best_single, greedy_energy, random, all_fit")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--set", **overrides)

    p = command("sweep", cmd_sweep, "MoE² and baselines across energy / latency budgets: table and trade-off figures")
    p.add_argument("scenario", help=scenario_help)
    p.add_argument("--energy-budgets", type=positive_floats, metavar="J,J,...",
                   help="energy budgets, J > 0 (default: the scenario's sweep block)")
    p.add_argument("--latency-scales", type=positive_floats, metavar="X,X,...",
                   help="multipliers > 0 of every category's latency budget (default: the scenario's sweep block)")
    p.add_argument("--methods", type=_names, metavar="M,M,...",
                   help="of moe2, best_single, greedy_energy, random, all_fit, uniform_vote "
                        "(default: the scenario's sweep block, else all)")
    p.add_argument("--replications", **{**replications, "help": (
        f"independent replications of every point, 1 to {MAX_REPLICATIONS:,} (seeds: the scenario seed + 0..R-1, "
        "the same for every method: common random numbers); R >= 2: each simulated metric gets its 95 %% "
        "Student-t interval across them in sweep.csv, and paired.csv the paired MoE² − baseline "
        "differences; R = 1: point values only")})
    p.add_argument("--backend", **backend_flag)
    p.add_argument("--address", **address_flag)
    p.add_argument("--jobs", type=POSITIVE_INT, help="workers (default: all cores; ray: all CPUs of the cluster)")
    p.add_argument("--out", help="output folder (default: runs/<scenario>-sweep); a sweep interrupted there resumes "
                                 "from its journal sweep.partial.jsonl")
    p.add_argument("--set", **overrides)
    p.add_argument("--allow-existing", **allow)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("rollout", cmd_rollout, "roll out a budget-setting agent in the gym environment; same outputs as run")
    p.add_argument("scenario", help="a scenario with an env block, e.g. scenarios/budget_env.yaml")
    p.add_argument("--agent", default="fixed", help="fixed | rule | constant | site | site-queue | site-pace "
                   "(the last four need env.action=subset) | path of a saved agent (.pt)")
    p.add_argument("--seed", type=_seed, default=0, help="episode seed")
    p.add_argument("--windows", type=POSITIVE_INT, help="episode length in control windows (default: the scenario's)")
    p.add_argument("--out", help="output folder (default: runs/rollout-<agent>)")
    p.add_argument("--set", **overrides)
    p.add_argument("--allow-existing", **allow)

    p = command("embed", cmd_embed, "outcome files (RouterDC JSON, wide or long CSV/Parquet) -> prompt, quality and "
                                    "embedding tables for train-gate/eval-gate/run")
    p.add_argument("--train", action="append", default=[], metavar="TASK=FILE", help="train-split outcome file")
    p.add_argument("--test", action="append", default=[], metavar="TASK=FILE",
                   help="test-split outcome file (test files alone make a test-only data folder)")
    p.add_argument("--scoring", action="append", default=[], metavar="TASK=RULE",
                   help="how a task's scores become right or wrong: threshold (right iff score > 0) or expected "
                        "(score = P(one answer right)); repeat per task (default: the published rule of a known "
                        "task, else inferred from the scores; embed prints each task's rule and why)")
    p.add_argument("--options", action="append", default=[], metavar="TASK=M",
                   help="answer choices (M >= 2) of a multiple-choice task; repeat per task (default: inferred "
                        "from choices A., B., ... listed in the prompts, else free form)")
    p.add_argument("--tasks", metavar="FILE", help="tasks file (YAML: {task: {scoring: RULE, options: M}}); "
                                                    "--scoring/--options win over it")
    p.add_argument("--embed-tail", type=POSITIVE_INT, metavar="N",
                   help="embed only each prompt's last N encoder tokens (the part few-shot prompts do not share)")
    p.add_argument("--out", required=True, help="data folder to write (required)")
    p.add_argument("--allow-existing", **allow)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("data", None, "inspect a data folder (see moe2sim data check --help)")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("check", help="per task: prompts, models, best single model, oracle, and flags",
                            description="per task and split: prompts, models, the best single model and the oracle, "
                                        "and flags: a model right on every prompt, oracle equal to the best single "
                                        "model, near-identical models, a validation part too small for U(S), "
                                        "prompts shared between splits", formatter_class=HelpFormatter)
    p.set_defaults(func=cmd_data_check)
    p.add_argument("data", nargs="?", default=None, help="data folder (default: the bundled traces)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any flag is raised")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = command("train-gate", cmd_train_gate, "train the gating network on a data folder's train split")
    p.add_argument("--data", default=None, help="folder with prompts/quality parquet and embeddings.npz "
                                                "(default: the bundled traces)")
    p.add_argument("--out", help="checkpoint path (default: DATA/gate.pt)")
    p.add_argument("--seed", type=_seed, default=0, help="training seed")
    p.add_argument("--hidden", type=POSITIVE_INT, default=256, help="hidden units")
    p.add_argument("--loss", choices=["bce", "mixture"], default="bce",
                   help="per-expert correctness or MoE²'s mixture cross-entropy; see moe2sim/routing/gate.py")
    p.add_argument("--epochs", type=POSITIVE_INT, default=60, help="maximum epochs (early stopping on validation)")
    p.add_argument("--cross-fit", type=FOLDS, metavar="K",
                   help="instead of one gate: K gates, each scoring the train fold it did not train on; writes "
                        "the cross-fitted logits U(S) is estimated from (default --out: DATA/gate_crossfit.npz)")
    p.add_argument("--fold-seed", type=_seed, default=0, help="seed of the --cross-fit fold assignment")

    p = command("eval-gate", cmd_eval_gate, "test-split accuracy of the gate and the baselines, pooled and per task")
    p.add_argument("--data", default=None, help="data folder (default: the bundled traces)")
    p.add_argument("--gate", help="checkpoint (default: DATA/gate.pt)")
    p.add_argument("--options", action="append", default=[], metavar="TASK=M",
                   help="choices (M >= 2) of a multiple-choice task for the vote; repeat per task "
                        "(default: the data's options column)")
    p.add_argument("--leave-task-out", action="store_true",
                   help="for each task: train without it, test on it (label-free, k=1) against best single experts")
    p.add_argument("--seed", type=_seed, default=0, help="training seed of --leave-task-out")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(attach_values(list(sys.argv[1:] if argv is None else argv), value_flags(parser)))
    if getattr(args, "data", "") is None:
        from moe2sim.data.bundled import bundled_path

        args.data = str(bundled_path("traces"))
    try:
        return args.func(args)
    except InputError as exc:
        print(f"moe2sim: error: {exc}", file=sys.stderr)
    except OSError as exc:  # a path the user gave that the OS refuses (too long, not a folder, ...)
        print(f"moe2sim: error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
              file=sys.stderr)
    except KeyboardInterrupt:
        print("moe2sim: interrupted; no result file was written (a sweep keeps its finished rows in its journal, "
              "OUT/sweep.partial.jsonl: run it again to resume)", file=sys.stderr)
        return 130
    return 2
