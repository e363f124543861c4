"""Combining the k chosen experts' answers into one. Each strategy returns, per query, the
score of the answer it returns (> 0 means correct), from the outcome scores of the experts.

- highest_weight: the answer of the expert with the largest gate weight.
- weighted_vote: answers that agree pool their weights; the answer with the largest total wins
  (ties: the one holding the higher-weighted expert). The outcome data records only right or
  wrong, so which answer a wrong expert gave is an assumption, fixed per (prompt, expert) by a
  seed: for a multiple-choice task with m options, one of the m-1 wrong options uniformly; for
  free-form tasks (numeric, code), wrong answers never coincide. All right answers agree.
- oracle: right if any chosen expert is right — an upper bound, not a realisable strategy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Aggregator(Protocol):
    name: str

    def combine(self, prompts: np.ndarray, experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Score of the combined answer per query; prompts (n,), experts and weights (n, k)."""
        ...


@dataclass(frozen=True)
class HighestWeight:
    scores: np.ndarray  # (n_prompts, n_experts)
    name: str = "highest_weight"

    def combine(self, prompts: np.ndarray, experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        top = experts[np.arange(len(experts)), np.argmax(weights, axis=1)]
        return self.scores[prompts, top]


@dataclass(frozen=True)
class Oracle:
    scores: np.ndarray
    name: str = "oracle"

    def combine(self, prompts: np.ndarray, experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.scores[prompts[:, None], experts].max(axis=1)


@dataclass(frozen=True)
class WeightedVote:
    scores: np.ndarray
    answers: np.ndarray  # (n_prompts, n_experts) answer ids, 0 = the right answer
    name: str = "weighted_vote"

    @classmethod
    def assumed_answers(cls, scores: np.ndarray, options: np.ndarray, seed: int) -> "WeightedVote":
        """options[i]: number of choices of prompt i, 0 for free-form answers."""
        rng = np.random.default_rng(seed)
        n, m = scores.shape
        wrong_choice = 1 + (rng.random((n, m)) * np.maximum(options[:, None] - 1, 1)).astype(np.int64)
        free_form = 1_000 + np.arange(m)[None, :]
        wrong = np.where(options[:, None] > 0, wrong_choice, free_form)
        return cls(scores, np.where(scores > 0, 0, wrong))

    def combine(self, prompts: np.ndarray, experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        ans = self.answers[prompts[:, None], experts]
        total = ((ans[:, :, None] == ans[:, None, :]) * weights[:, None, :]).sum(axis=2)
        order = np.argsort(-weights, axis=1, kind="stable")
        total_sorted = np.take_along_axis(total, order, axis=1)
        winner = order[np.arange(len(order)), np.argmax(total_sorted, axis=1)]
        return self.scores[prompts, experts[np.arange(len(experts)), winner]]
