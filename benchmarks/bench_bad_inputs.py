"""Generated bad inputs, counted: how many distinct inputs each generator tried and how they ended.

    python benchmarks/bench_bad_inputs.py [--examples N] [--seed S] [--only NAME]
    python benchmarks/bench_bad_inputs.py --ci      # exactly the inputs tests/test_bad_inputs.py tries

Runs the generators of tests/bad_inputs.py (the CI suite runs a small derandomized sample of the same)
with N examples each and prints, per generator, the distinct inputs tried and the outcome counts:
exit2 (one line naming the file or flag), exit0 (valid outputs), other (traceback, hang, invalid output:
each listed). Exit code 1 if any input ended as `other`.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bad_inputs import CASES, Outcome  # noqa: E402


def sample(name: str, examples: int | None, rng_seed: int | None) -> tuple[dict[str, Outcome], float]:
    """Distinct inputs (by repr) of one generator and their outcomes; examples None: the CI sample
    (its example count, derandomized)."""
    case = CASES[name]
    seen: dict[str, Outcome] = {}
    ci = examples is None

    @seed(rng_seed or 0)
    @settings(max_examples=case.ci_examples if ci else examples, derandomize=ci, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case.strategy)
    def collect(value):
        key = repr(value)
        if key not in seen:
            seen[key] = case.run(value)

    t0 = time.perf_counter()
    collect()
    return seen, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="examples per generator (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--only", choices=list(CASES), help="one generator (default: all)")
    parser.add_argument("--ci", action="store_true", help="the CI sample: each generator's CI count, derandomized")
    args = parser.parse_args()
    total: Counter = Counter()
    others = []
    print(f"| generator | distinct inputs | exit 2 | exit 0 | other | wall s |\n|---|---|---|---|---|---|")
    for name in [args.only] if args.only else CASES:
        seen, wall = sample(name, None if args.ci else args.examples, args.seed)
        counts = Counter(o.kind for o in seen.values())
        total.update(counts)
        total["inputs"] += len(seen)
        others += [(name, key, o) for key, o in seen.items() if o.kind == "other"]
        print(f"| {name} | {len(seen)} | {counts['exit2']} | {counts['exit0']} | {counts['other']} | {wall:.0f} |",
              flush=True)
    print(f"| **all** | **{total['inputs']}** | **{total['exit2']}** | **{total['exit0']}** | **{total['other']}** | |")
    for name, key, outcome in others:
        print(f"OTHER [{name}] {key[:300]}\n    -> {outcome}")
    return 1 if others else 0


if __name__ == "__main__":
    sys.exit(main())
