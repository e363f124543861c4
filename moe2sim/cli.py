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
