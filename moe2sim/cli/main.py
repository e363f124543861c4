"""The `moe2sim` command. Each sub-command parses its flags, calls one library function and prints.
Bad input: one line naming the file or flag and the field, exit code 2, no traceback; Ctrl-C:
exit 130 with one line. Library modules are imported inside the commands, so `--help` is fast."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moe2sim import __version__
from moe2sim.errors import InputError


def _print_table(rows: list[list[object]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(r, widths)))


def _output(args: argparse.Namespace, default: Path):
    from moe2sim.experiments.outputs import OutputDir

    return OutputDir(Path(args.out) if args.out else default, "--out", args.allow_existing)


def cmd_validate(args: argparse.Namespace) -> int:
    from moe2sim.scenario import load_scenario
    from moe2sim.twin import Twin

    scenario = load_scenario(args.scenario, args.set)
    Twin.build(scenario)  # resolves traces, profiles and experts without simulating
    print(f"{args.scenario}: ok ({len(scenario.experts)} experts, {len(scenario.categories)} categories)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from moe2sim.experiments.run import run_scenario
    from moe2sim.report.html import SUMMARY_HEADER, summary_rows
    from moe2sim.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.set)
    out = _output(args, Path("runs") / scenario.name)
    summary = run_scenario(scenario, out, seed=args.seed, progress=not args.quiet)
    _print_table(summary_rows(summary), SUMMARY_HEADER)
    print(f"energy total {summary['energy_J_total'] / 1e3:.1f} kJ "
          f"(idle {summary['energy_J_idle_total'] / 1e3:.1f} kJ) over {summary['run_s']:.0f} s; wrote {out.path}/")
    return 0


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InputError(flag, item, "expected NAME=VALUE")
        out.append((key, value))
    return out


def cmd_embed(args: argparse.Namespace) -> int:
    from moe2sim.data.outcomes import OutcomeFile, write_data_folder

    sources = [OutcomeFile(task, split, Path(f)) for split, flag in (("train", "--train"), ("test", "--test"))
               for task, f in _pairs(getattr(args, split), flag)]
    folder = write_data_folder(sources, Path(args.out), args.embed_tail, progress=not args.quiet)
    for warning in folder.warnings:
        print(f"moe2sim: warning: {warning}", file=sys.stderr)
    dropped = f"; {folder.dropped} prompts dropped for a missing outcome" if folder.dropped else ""
    cost = "; per-model cost kept" if folder.with_cost else ""
    print(f"{folder.prompts} prompts, {folder.models} models, embeddings {folder.dim}-d{dropped}{cost} -> {args.out}/")
    return 0


def cmd_train_gate(args: argparse.Namespace) -> int:
    from moe2sim.routing.evaluation import train_on
    from moe2sim.routing.gate import TrainConfig

    data = Path(args.data)
    config = TrainConfig(loss=args.loss, seed=args.seed, hidden=args.hidden, max_epochs=args.epochs)
    gate = train_on(data, config)
    out = Path(args.out) if args.out else data / "gate.pt"
    gate.save(out)
    info = gate.info
    verdict = (f"epoch {info['best_epoch']} of {info['epochs_run']}" if info["beat_prior"] else
               "the residual never beat the task-posterior prior on validation: the prior alone is kept")
    print(f"gate over {len(gate.experts)} experts, {len(gate.tasks)} tasks: validation k=1 task-mean accuracy "
          f"{info['val_task_mean_accuracy']:.3f} (prior alone {info['val_prior_only_accuracy']:.3f}; {verdict}; "
          f"{info['train_seconds']} s) -> {out}")
    return 0


def cmd_eval_gate(args: argparse.Namespace) -> int:
    from moe2sim.routing.evaluation import evaluate, format_table, leave_task_out
    from moe2sim.routing.gate import Gate, TrainConfig

    data = Path(args.data)
    if args.leave_task_out:
        table = leave_task_out(data, TrainConfig(seed=args.seed))
        print(json.dumps(table, indent=2) if args.json else format_table(table))
        return 0
    gate = Gate.load(Path(args.gate) if args.gate else data / "gate.pt")
    options = {}
    for task, m in _pairs(args.options, "--options"):
        if not m.isdigit() or int(m) < 2:
            raise InputError("--options", f"{task}={m}", "expected TASK=M with M a whole number of choices ≥ 2")
        options[task] = int(m)
    table = evaluate(gate, data, options)
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from moe2sim.experiments.select import select_subset
    from moe2sim.scenario import load_scenario

    overrides = list(args.set)
    if args.energy_budget is not None:
        overrides.append(f"energy_budget_J={args.energy_budget}")
    overrides += [f"categories.{cat}.latency_budget_s={value}" for cat, value in _pairs(args.latency_budget, "--latency-budget")]
    if args.method is not None:
        overrides.append(f"policy.selection.method={args.method}")
    out = select_subset(load_scenario(args.scenario, overrides))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"subset  {', '.join(out['subset'])}   (method {out['method']}, top-{out['k']})")
    print(f"U(S)    {out['U']:.4f}  validation accuracy of the gate restricted to S")
    print(f"binding {', '.join(out['binding']) or 'none: every expert is selected'}")
    print(f"solver  {out['sets_evaluated']} sets evaluated in {out['solver_seconds'] * 1e3:.2f} ms "
          f"(of {out['subsets_total']} subsets)")
    print(f"energy  worst case {out['worst_case_energy_J']:.1f} J of {out['energy_budget_J']:.1f} J")
    for cat, d in out["worst_case_delay_s"].items():
        print(f"latency {cat:14s} worst case {d:.3f} s of {out['latency_budget_s'][cat]:.3f} s")
    return 0


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(flag, text, "expected comma-separated numbers") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    from moe2sim.experiments.sweep import comparison, sweep_to, versus_moe2
    from moe2sim.scenario import load_scenario

    overrides = list(args.set)
    for flag, key, value in (("--energy-budgets", "sweep.energy_budget_J", _floats(args.energy_budgets, "--energy-budgets")),
                             ("--latency-scales", "sweep.latency_scale", _floats(args.latency_scales, "--latency-scales")),
                             ("--methods", "sweep.methods", args.methods.split(",") if args.methods else None)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    scenario = load_scenario(args.scenario, overrides)
    if scenario.sweep is None or not (scenario.sweep.energy_budget_J or scenario.sweep.latency_scale):
        raise InputError(args.scenario, "sweep", "nothing to sweep: give --energy-budgets and/or --latency-scales")
    out = _output(args, Path("runs") / f"{scenario.name}-sweep")
    df = sweep_to(scenario, out, jobs=args.jobs, progress=not args.quiet)
    print("mean test accuracy over the budget points where each method keeps the budgets:")
    print(comparison(df).to_string(float_format=lambda v: f"{v:.3f}"))
    versus = versus_moe2(df)
    if not versus.empty:
        print("\nMoE² against each baseline, over the points where both keep the budgets:")
        print(versus.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out.path}/sweep.csv and {out.path}/report.html")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from moe2sim.experiments.run import rollout
    from moe2sim.report.html import SUMMARY_HEADER, summary_rows
    from moe2sim.scenario import load_scenario

    load_scenario(args.scenario, args.set)  # bad input fails here, before anything is built
    out = _output(args, Path("runs") / f"rollout-{Path(args.agent).stem}")
    summary = rollout(args.scenario, args.set, args.agent, out, args.seed, args.windows)
    _print_table(summary_rows(summary), SUMMARY_HEADER)
    print(f"agent {args.agent}: episode reward {summary['episode_reward']:.1f} over {summary['windows']} windows; "
          f"wrote {out.path}/")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe2sim", description="Simulator and digital twin of MoE² edge LLM serving",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"moe2sim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    overrides = dict(action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. policy.k=3 or categories.gsm8k.latency_budget_s=5")
    allow = dict(action="store_true", help="write into a non-empty folder moe2sim did not write (its files are "
                                            "never overwritten or deleted)")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = command("validate", cmd_validate, "check a scenario and the files it names, without running")
    p.add_argument("scenario")
    p.add_argument("--set", **overrides)

    p = command("run", cmd_run, "simulate a scenario; write per-query records, summary.json, report.html")
    p.add_argument("scenario")
    p.add_argument("--out", help="output folder (default runs/<scenario name>)")
    p.add_argument("--seed", type=_seed, help="override the scenario seed")
    p.add_argument("--set", **overrides)
    p.add_argument("--allow-existing", **allow)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("select", cmd_select, "solve MoE²'s coarse level: the best expert subset within the budgets")
    p.add_argument("scenario")
    p.add_argument("--energy-budget", type=float, metavar="J", help="per-query energy budget (J; default: the scenario's)")
    p.add_argument("--latency-budget", action="append", default=[], metavar="CAT=S",
                   help="a category's latency budget (default: the scenario's)")
    p.add_argument("--method", help="selection method (default: the scenario's): monotone, exact, exhaustive, "
                                    "best_single, greedy_energy, random, all_fit")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--set", **overrides)

    p = command("sweep", cmd_sweep, "MoE² and baselines across energy / latency budgets: table and trade-off figures")
    p.add_argument("scenario")
    p.add_argument("--energy-budgets", metavar="J,J,...", help="energy budgets (default: the scenario's sweep block)")
    p.add_argument("--latency-scales", metavar="X,X,...", help="multipliers of every category's latency budget")
    p.add_argument("--methods", metavar="M,M,...", help="moe2,best_single,greedy_energy,random,all_fit,uniform_vote")
    p.add_argument("--jobs", type=_positive_int, help="worker processes (default: all cores)")
    p.add_argument("--out", help="output folder (default runs/<scenario>-sweep)")
    p.add_argument("--set", **overrides)
    p.add_argument("--allow-existing", **allow)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("rollout", cmd_rollout, "roll out a budget-setting agent in the gym environment; same outputs as run")
    p.add_argument("scenario", help="a scenario with an env block, e.g. scenarios/budget_env.yaml")
    p.add_argument("--agent", default="fixed", help="fixed | rule | constant | site | site-queue | site-pace "
                   "(the last four need env.action=subset) | path of a saved agent (.pt)")
    p.add_argument("--seed", type=_seed, default=0, help="episode seed")
    p.add_argument("--windows", type=_positive_int, help="episode length in control windows (default: the scenario's)")
    p.add_argument("--out", help="output folder (default runs/rollout-<agent>)")
    p.add_argument("--set", **overrides)
    p.add_argument("--allow-existing", **allow)

    p = command("embed", cmd_embed, "outcome files (RouterDC JSON, wide or long CSV/Parquet) -> prompt, quality and "
                                    "embedding tables for train-gate/eval-gate/run")
    p.add_argument("--train", action="append", default=[], metavar="TASK=FILE", help="train-split outcome file")
    p.add_argument("--test", action="append", default=[], metavar="TASK=FILE",
                   help="test-split outcome file (test files alone make a test-only data folder)")
    p.add_argument("--embed-tail", type=_positive_int, metavar="N",
                   help="embed only each prompt's last N encoder tokens (the part few-shot prompts do not share)")
    p.add_argument("--out", required=True, help="data folder to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("train-gate", cmd_train_gate, "train the gating network on a data folder's train split")
    p.add_argument("--data", default=None, help="folder with prompts/quality parquet and embeddings.npz "
                                                "(default: the bundled traces)")
    p.add_argument("--out", help="checkpoint path (default DATA/gate.pt)")
    p.add_argument("--seed", type=_seed, default=0, help="training seed")
    p.add_argument("--hidden", type=_positive_int, default=256, help="hidden units")
    p.add_argument("--loss", choices=["bce", "mixture"], default="bce",
                   help="per-expert correctness or MoE²'s mixture cross-entropy; see moe2sim/routing/gate.py")
    p.add_argument("--epochs", type=_positive_int, default=60, help="maximum epochs (early stopping on validation)")

    p = command("eval-gate", cmd_eval_gate, "test-split accuracy of the gate and the baselines, pooled and per task")
    p.add_argument("--data", default=None, help="data folder (default: the bundled traces)")
    p.add_argument("--gate", help="checkpoint (default DATA/gate.pt)")
    p.add_argument("--options", action="append", default=[], metavar="TASK=M",
                   help="choices of a multiple-choice task for the vote (default: the data's `options` column)")
    p.add_argument("--leave-task-out", action="store_true",
                   help="for each task: train without it, test on it (label-free, k=1) against best single experts")
    p.add_argument("--seed", type=_seed, default=0, help="training seed of --leave-task-out")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "data", "") is None:
        from moe2sim.data.bundled import bundled_path

        args.data = str(bundled_path("traces"))
    try:
        return args.func(args)
    except InputError as exc:
        print(f"moe2sim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moe2sim: interrupted; nothing was written", file=sys.stderr)
        return 130
