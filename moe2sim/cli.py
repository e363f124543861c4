"""The `moe2sim` command. Bad input: one line naming file and field, exit code 2, no traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moe2sim.errors import InputError
from moe2sim.report import SUMMARY_HEADER, summary_rows
from moe2sim.scenario import load_scenario


def _print_table(rows: list[list[object]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(r, widths)))


def cmd_validate(args: argparse.Namespace) -> int:
    from moe2sim.twin import Twin

    scenario = load_scenario(args.scenario, args.set)
    Twin.build(scenario)  # resolves traces, profiles and experts without simulating
    print(f"{args.scenario}: ok ({len(scenario.experts)} experts, {len(scenario.categories)} categories)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from moe2sim.run import run_scenario

    scenario = load_scenario(args.scenario, args.set)
    out = Path(args.out) if args.out else Path("runs") / scenario.name
    summary = run_scenario(scenario, out, seed=args.seed, progress=not args.quiet)
    _print_table(summary_rows(summary), SUMMARY_HEADER)
    print(f"energy total {summary['energy_J_total'] / 1e3:.1f} kJ "
          f"(idle {summary['energy_J_idle_total'] / 1e3:.1f} kJ) over {summary['run_s']:.0f} s; wrote {out}/")
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
    from moe2sim.embed import embed_texts, save_embeddings
    from moe2sim.outcomes import OutcomeFile, outcome_tables, write_parquet_atomic

    sources = [OutcomeFile(task, split, Path(f)) for split, flag in (("train", "--train"), ("test", "--test"))
               for task, f in _pairs(getattr(args, split), flag)]
    if not any(s.split == "train" for s in sources) or not any(s.split == "test" for s in sources):
        raise InputError("moe2sim embed", "--train/--test", "give at least one train and one test outcome file")
    prompts, quality = outcome_tables(sources)
    matrix = embed_texts(prompts["question"].tolist(), progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_embeddings(out / "embeddings.npz", prompts["prompt_id"].to_numpy(), matrix)
    write_parquet_atomic(quality, out / "quality.parquet")
    write_parquet_atomic(prompts, out / "prompts.parquet")
    print(f"{len(prompts)} prompts, {quality['expert'].nunique()} models, embeddings {matrix.shape[1]}-d -> {out}/")
    return 0


def cmd_train_gate(args: argparse.Namespace) -> int:
    from moe2sim.gate import TrainConfig
    from moe2sim.gate_eval import train_on

    data = Path(args.data)
    config = TrainConfig(loss=args.loss, seed=args.seed, hidden=args.hidden, max_epochs=args.epochs)
    gate = train_on(data, config)
    out = Path(args.out) if args.out else data / "gate.pt"
    gate.save(out)
    info = gate.info
    print(f"gate over {len(gate.experts)} experts: validation top-1 accuracy {info['val_top1_accuracy']:.3f} "
          f"(epoch {info['best_epoch']} of {info['epochs_run']}, {info['train_seconds']} s) -> {out}")
    return 0


def cmd_eval_gate(args: argparse.Namespace) -> int:
    import json

    from moe2sim.gate import Gate
    from moe2sim.gate_eval import DEFAULT_OPTIONS, evaluate, format_table

    data = Path(args.data)
    gate = Gate.load(Path(args.gate) if args.gate else data / "gate.pt")
    options = {**DEFAULT_OPTIONS, **{t: int(m) for t, m in _pairs(args.options, "--options")}}
    table = evaluate(gate, data, options)
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    import json

    from moe2sim.build import build_selector, load_split
    from moe2sim.problem import budgets_of
    from moe2sim.selection import Budgets, InfeasibleBudgets, binding_constraints, worst_delay
    from moe2sim.twin import Twin

    overrides = list(args.set)
    if args.energy_budget is not None:
        overrides.append(f"energy_budget_J={args.energy_budget}")
    overrides += [f"categories.{cat}.latency_budget_s={value}" for cat, value in _pairs(args.latency_budget, "--latency-budget")]
    overrides += [f"policy.selection.method={args.method}"]
    scenario = load_scenario(args.scenario, overrides)
    twin = Twin.build(scenario.model_copy(update={"policy": scenario.policy.model_copy(
        update={"selection": scenario.policy.selection.model_copy(update={"method": "none"})})}))
    selector = build_selector(scenario, twin.profiles, twin.workload, list(twin.quality.experts))
    budgets = budgets_of(scenario)
    problem = selector.problem
    try:
        sel = selector.select(budgets)
    except InfeasibleBudgets as exc:
        raise InputError(args.scenario, "budgets", f"no subset meets them: {exc}") from None
    delay = worst_delay(problem, sel.mask)
    out = {
        "subset": sel.subset(problem.names), "U": sel.utility, "method": sel.method,
        "binding": binding_constraints(problem, sel.mask, budgets), "sets_evaluated": sel.evaluated,
        "solver_seconds": sel.seconds, "k": problem.k,
        "worst_case_energy_J": problem.energy_of(sel.mask), "energy_budget_J": budgets.energy_J,
        "worst_case_delay_s": dict(zip(problem.categories, delay.tolist())),
        "latency_budget_s": dict(zip(problem.categories, budgets.latency_s.tolist())),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"subset  {', '.join(out['subset'])}   (method {sel.method}, top-{problem.k})")
    print(f"U(S)    {sel.utility:.4f}  validation accuracy of the gate restricted to S")
    print(f"binding {', '.join(out['binding']) or 'none: every expert is selected'}")
    print(f"solver  {sel.evaluated} sets evaluated in {sel.seconds * 1e3:.2f} ms (of {2 ** problem.n - 1} subsets)")
    print(f"energy  worst case {out['worst_case_energy_J']:.1f} J of {budgets.energy_J:.1f} J")
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
    import shutil
    import tempfile

    from moe2sim.report import sweep_section, write_report
    from moe2sim.run import write_table
    from moe2sim.scenario import SweepConfig
    from moe2sim.sweep import comparison, run_sweep

    scenario = load_scenario(args.scenario, args.set)
    base = scenario.sweep or SweepConfig()
    update = {"energy_budget_J": _floats(args.energy_budgets, "--energy-budgets"),
              "latency_scale": _floats(args.latency_scales, "--latency-scales"),
              "methods": args.methods.split(",") if args.methods else None}
    try:
        sweep = SweepConfig.model_validate({**base.model_dump(), **{k: v for k, v in update.items() if v is not None}})
    except ValueError as exc:
        raise InputError("moe2sim sweep", "options", str(exc).splitlines()[-1]) from None
    if not sweep.energy_budget_J and not sweep.latency_scale:
        raise InputError(args.scenario, "sweep", "nothing to sweep: give --energy-budgets and/or --latency-scales")
    scenario = scenario.model_copy(update={"sweep": sweep})
    df = run_sweep(scenario, jobs=args.jobs, progress=not args.quiet)
    out = Path(args.out) if args.out else Path("runs") / f"{scenario.name}-sweep"
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write_table(df, stage / "sweep", "csv")
        write_report(stage / "report.html", f"moe2sim sweep: {scenario.name}", None, None, {}, scenario.description,
                     sweep_section(df, [e.name for e in scenario.experts], [c.name for c in scenario.categories]))
        out.mkdir(exist_ok=True)
        for f in stage.iterdir():
            f.replace(out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print("mean test accuracy over the budget points where each method keeps the budgets:")
    print(comparison(df).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}/sweep.csv and {out}/report.html")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from moe2sim.run import rollout

    load_scenario(args.scenario, args.set)  # bad input fails here, before anything is built
    out = Path(args.out) if args.out else Path("runs") / f"rollout-{Path(args.agent).stem}"
    summary = rollout(args.scenario, args.set, args.agent, out, args.seed, args.windows)
    _print_table(summary_rows(summary), SUMMARY_HEADER)
    print(f"agent {args.agent}: episode reward {summary['episode_reward']:.1f} over {summary['windows']} windows; "
          f"wrote {out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe2sim", description="Simulator and digital twin of MoE² edge LLM serving")
    sub = parser.add_subparsers(dest="command", required=True)
    overrides = dict(action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. policy.k=3 or categories.gsm8k.latency_budget_s=5")

    p = sub.add_parser("validate", help="check a scenario and the files it names, without running")
    p.add_argument("scenario")
    p.add_argument("--set", **overrides)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="simulate a scenario; write per-query records, summary.json, report.html")
    p.add_argument("scenario")
    p.add_argument("--out", help="output folder (default runs/<scenario name>)")
    p.add_argument("--seed", type=int, help="override the scenario seed")
    p.add_argument("--set", **overrides)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("select", help="solve MoE²'s coarse level: the best expert subset within the budgets")
    p.add_argument("scenario")
    p.add_argument("--energy-budget", type=float, metavar="J", help="per-query energy budget (J)")
    p.add_argument("--latency-budget", action="append", default=[], metavar="CAT=S", help="a category's latency budget")
    p.add_argument("--method", default="monotone",
                   choices=["monotone", "exact", "exhaustive", "best_single", "greedy_energy", "random", "all_fit"])
    p.add_argument("--json", action="store_true")
    p.add_argument("--set", **overrides)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("sweep", help="MoE² and baselines across energy / latency budgets: table and trade-off figures")
    p.add_argument("scenario")
    p.add_argument("--energy-budgets", metavar="J,J,...", help="energy budgets (default: the scenario's sweep block)")
    p.add_argument("--latency-scales", metavar="X,X,...", help="multipliers of every category's latency budget")
    p.add_argument("--methods", metavar="M,M,...", help="moe2,best_single,greedy_energy,random,all_fit,uniform_vote")
    p.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    p.add_argument("--out", help="output folder (default runs/<scenario>-sweep)")
    p.add_argument("--set", **overrides)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("rollout", help="roll out a budget-setting agent in the gym environment; same outputs as run")
    p.add_argument("scenario", help="a scenario with an env block, e.g. scenarios/budget_env.yaml")
    p.add_argument("--agent", default="fixed", help="fixed | rule | path of a saved agent (.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--windows", type=int, help="episode length in control windows (default: the scenario's)")
    p.add_argument("--out", help="output folder (default runs/rollout-<agent>)")
    p.add_argument("--set", **overrides)
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("embed", help="outcome JSON files -> prompt, quality and embedding tables for train-gate/run")
    p.add_argument("--train", action="append", default=[], metavar="TASK=FILE", help="train-split outcome file")
    p.add_argument("--test", action="append", default=[], metavar="TASK=FILE", help="test-split outcome file")
    p.add_argument("--out", required=True, help="data folder to write")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("train-gate", help="train the gating network on a data folder's train split")
    p.add_argument("--data", default="traces", help="folder with prompts/quality parquet and embeddings.npz")
    p.add_argument("--out", help="checkpoint path (default DATA/gate.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--loss", choices=["bce", "mixture"], default="bce",
                   help="per-expert correctness (default) or MoE²'s mixture cross-entropy; see moe2sim/gate.py")
    p.add_argument("--epochs", type=int, default=60, help="maximum epochs (early stopping on validation)")
    p.set_defaults(func=cmd_train_gate)

    p = sub.add_parser("eval-gate", help="test-split accuracy of the gate and the baselines, pooled and per task")
    p.add_argument("--data", default="traces")
    p.add_argument("--gate", help="checkpoint (default DATA/gate.pt)")
    p.add_argument("--options", action="append", default=[], metavar="TASK=M",
                   help="choices of a multiple-choice task for the vote (default mmlu=4, arc_challenge=4)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_gate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"moe2sim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
