"""Combining the k chosen experts' answers into one, under each benchmark's published scoring rule.

Outcomes. Each prompt's task declares how a per-prompt score becomes right or wrong (RouterDC's
evaluation): a threshold task (MMLU, ARC, CMMLU, C-EVAL) is right iff score > 0; an expected task
(GSM8K, HumanEval, MBPP) has score = fraction of sampled answers that were right, so one answer is
right with probability p = score. Per (prompt, expert) p is therefore 1/0 (threshold) or the score
(expected); in a simulation each leg's answer is right by a seeded draw with probability p.

Aggregators decide, from which legs' answers are right, whether the combined answer is right:
- highest_weight: the answer of the expert with the largest gate weight;
- weighted_vote: answers that agree pool their weights; the largest total wins (ties: the one holding
  the higher-weighted expert). The data records only right or wrong, so which answer a wrong expert
  gave is an assumption, fixed per (prompt, expert) by a seed: for a multiple-choice task with m
  options, one of the m-1 wrong options uniformly; for free-form tasks (numeric, code), wrong answers
  never coincide. All right answers agree;
- oracle: right if any chosen expert is right — an upper bound, not a realisable strategy.

`expected_correct` gives the exact probability that the combined answer is right, summing over the
2^k right/wrong patterns of the k legs (each leg independent): evaluation and the selection's U(S)
use it; the simulator draws.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Outcomes:
    """p[i, j]: probability that expert j's single answer to prompt i is right."""

    p: np.ndarray  # (n_prompts, n_experts)

    @classmethod
    def of(cls, scores: np.ndarray, expected: np.ndarray) -> "Outcomes":
        """scores (n_prompts, n_experts); expected (n_prompts,) True for expected-score tasks."""
        p = np.where(expected[:, None], np.clip(scores, 0.0, 1.0), scores > 0)
        return cls(p.astype(np.float64))

    def legs(self, prompts: np.ndarray, experts: np.ndarray) -> np.ndarray:
        return self.p[prompts[:, None], experts]

    def draw(self, prompts: np.ndarray, experts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, k) bool: which legs' answers are right, one seeded draw each."""
        return rng.random(experts.shape) < self.legs(prompts, experts)


class Aggregator(Protocol):
    name: str

    def correct(self, prompts: np.ndarray, experts: np.ndarray, weights: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(n,) bool: is the combined answer right, given which of the k legs are right (n, k)."""
        ...


@dataclass(frozen=True)
class HighestWeight:
    name: str = "highest_weight"

    def correct(self, prompts: np.ndarray, experts: np.ndarray, weights: np.ndarray, right: np.ndarray) -> np.ndarray:
        return right[np.arange(len(right)), np.argmax(weights, axis=1)]


@dataclass(frozen=True)
class Oracle:
    name: str = "oracle"

    def correct(self, prompts: np.ndarray, experts: np.ndarray, weights: np.ndarray, right: np.ndarray) -> np.ndarray:
        return right.any(axis=1)


@dataclass(frozen=True)
class WeightedVote:
    wrong: np.ndarray  # (n_prompts, n_experts) the assumed answer id of a wrong answer (never 0)
    name: str = "weighted_vote"

    @classmethod
    def assumed_answers(cls, n_experts: int, options: np.ndarray, seed: int) -> "WeightedVote":
        """options[i]: number of choices of prompt i, 0 for free-form answers."""
        rng = np.random.default_rng(seed)
        n = len(options)
        wrong_choice = 1 + (rng.random((n, n_experts)) * np.maximum(options[:, None] - 1, 1)).astype(np.int64)
        free_form = 1_000 + np.arange(n_experts)[None, :]
        return cls(np.where(options[:, None] > 0, wrong_choice, free_form))

    def correct(self, prompts: np.ndarray, experts: np.ndarray, weights: np.ndarray, right: np.ndarray) -> np.ndarray:
        ans = np.where(right, 0, self.wrong[prompts[:, None], experts])
        total = ((ans[:, :, None] == ans[:, None, :]) * weights[:, None, :]).sum(axis=2)
        order = np.argsort(-weights, axis=1, kind="stable")
        total_sorted = np.take_along_axis(total, order, axis=1)
        winner = order[np.arange(len(order)), np.argmax(total_sorted, axis=1)]
        return ans[np.arange(len(ans)), winner] == 0


def expected_correct(aggregator: Aggregator, outcomes: Outcomes, prompts: np.ndarray, experts: np.ndarray,
                     weights: np.ndarray) -> np.ndarray:
    """(n,) exact probability that the combined answer is right (legs independent):
    Σ over the 2^k right/wrong patterns r of P(r) · [the aggregator is right under r], judged in one call
    over every (pattern, query) pair with P(r) > 0."""
    p = outcomes.legs(prompts, experts)
    n, k = p.shape
    patterns = np.array(list(itertools.product((False, True), repeat=k)))       # (2^k, k)
    prob = np.prod(np.where(patterns[:, None, :], p, 1.0 - p), axis=2)         # (2^k, n)
    pattern, row = np.nonzero(prob > 0)
    right = aggregator.correct(prompts[row], experts[row], weights[row], patterns[pattern])
    return np.bincount(row, weights=prob[pattern, row] * right, minlength=n)
