"""Gate speed and MoE²'s optimality-preservation claim, on the bundled data.

1. Training time of `train-gate` (full 7-expert gate) and inference speed (prompts/s on CPU,
   embeddings given) at batch 1 and batch 1,024.
2. For every non-empty subset S of the 7 experts: test accuracy of the full-set gate restricted
   to S (mask, no retraining) vs a gate retrained on S alone, at top-1; the largest and mean gap.
3. Monotonicity of U(S) = restricted-gate test accuracy: how many pairs S ⊂ S' have U(S) > U(S').

    python benchmarks/bench_gate.py [--data traces] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from moe2sim.routing.gate import TrainConfig
from moe2sim.routing.evaluation import GateData, train_on
from moe2sim.routing.routers import topk_in_subset


def top1_accuracy(logits: np.ndarray, correct: np.ndarray, allowed: np.ndarray) -> float:
    experts, _ = topk_in_subset(logits, allowed, 1)
    return float(correct[np.arange(len(correct)), experts[:, 0]].mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("traces"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    gate = train_on(args.data, TrainConfig())
    train_s = time.perf_counter() - t0
    test = GateData.load(args.data, "test", gate.experts)
    x = np.tile(test.x, (2, 1))[:10_000]
    t0 = time.perf_counter()
    for i in range(2_000):
        gate.logits(x[i:i + 1])
    batch1 = 2_000 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, len(x), 1024):
        gate.logits(x[i:i + 1024])
    batched = len(x) / (time.perf_counter() - t0)
    print(f"train-gate (7 experts, {gate.info['train_prompts']} prompts): {train_s:.1f} s "
          f"(epochs {gate.info['epochs_run']}); inference {batch1:,.0f} prompts/s at batch 1, "
          f"{batched:,.0f} prompts/s at batch 1024")

    n = len(gate.experts)
    full_logits = gate.logits(test.x)  # from the prompt alone
    correct = test.p  # P(one answer right) under each task's published scoring rule
    subsets = [s for r in range(1, n + 1) for s in itertools.combinations(range(n), r)]
    restricted, retrained = {}, {}
    t0 = time.perf_counter()
    for s in subsets:
        allowed = np.zeros(n, bool)
        allowed[list(s)] = True
        restricted[s] = top1_accuracy(full_logits, correct, allowed)
        if len(s) == 1:
            retrained[s] = restricted[s]  # one expert: nothing to route
            continue
        names = [gate.experts[j] for j in s]
        sub = train_on(args.data, TrainConfig(), names)
        retrained[s] = top1_accuracy(sub.logits(test.x), correct[:, list(s)], np.ones(len(s), bool))
    sweep_s = time.perf_counter() - t0
    gaps = np.array([retrained[s] - restricted[s] for s in subsets])
    worst = subsets[int(np.argmax(np.abs(gaps)))]
    pairs = [(a, b) for a in subsets for b in subsets if len(a) < len(b) and set(a) <= set(b)]
    drops = [(a, b) for a, b in pairs if restricted[a] > restricted[b] + 1e-12]
    big = [(a, b) for a, b in drops if restricted[a] - restricted[b] > 0.005]
    result = {
        "train_seconds": round(train_s, 2), "inference_prompts_per_s_batch1": round(batch1),
        "inference_prompts_per_s_batch1024": round(batched), "subsets": len(subsets),
        "retrain_sweep_seconds": round(sweep_s, 1),
        "gap_retrained_minus_restricted": {"mean": float(gaps.mean()), "mean_abs": float(np.abs(gaps).mean()),
                                           "max_abs": float(np.abs(gaps).max()),
                                           "worst_subset": [gate.experts[j] for j in worst],
                                           "restricted_better": int((gaps < 0).sum()),
                                           "retrained_better": int((gaps > 0).sum())},
        "monotonicity": {"pairs": len(pairs), "violations": len(drops), "violations_over_0.5pt": len(big),
                         "largest_drop": float(max((restricted[a] - restricted[b] for a, b in drops), default=0))},
        "full_gate_top1_test": restricted[tuple(range(n))],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
