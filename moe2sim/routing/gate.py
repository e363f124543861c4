"""The gating network g(x; θ) ∈ R^N of MoE², routing from the prompt alone, and its training.

Model, for a prompt with embedding e (experts n = 1..N, tasks t = 1..T seen in training):
    p(t | e) = softmax(C e + c)                          a linear task head: the task is NOT an input
    π_n(e)   = Σ_t p(t | e) · A[t, n]                    A[t, n]: expert n's train accuracy on task t under
                                                         the published scoring rule (fixed)
    g_n(e)   = logit(clip(π_n(e))) + W2 · Dropout(GELU(W1 e))     W2 starts at zero
Given the task label (the optional, label-aware use: `logits(x, tasks)`), p(t | e) is replaced by the
label's one-hot; a task never seen in training is routed from its embedding (its posterior), never a
silent pooled prior.

Training (`train_gate`), on the train split only:
1. the task head by cross-entropy on the prompts' task labels (labels are training targets only);
2. the residual by a loss on the targets u_n = P(expert n's one answer is right) under each task's rule
   (1[score > 0] for threshold tasks, the score for expected tasks):
   - "bce" (default): Σ_n BCE(σ(g_n(e)), u_n) — separable over experts, so masking experts outside a
     subset S leaves each expert's prediction as it was (MoE²'s optimality preservation by construction);
   - "mixture": MoE²'s cross-entropy of the mixture, −log(ε + Σ_n softmax(g)_n u_n);
3. early stopping on the validation part's k = 1 accuracy averaged over tasks (the published metric);
   "epoch −1" (no residual: the task-posterior prior alone) is a candidate, so the residual is kept only
   where it earns its place on held-out prompts; `info["beat_prior"]` says whether it did.
Restricting the gate to S masks logits and never retrains.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from moe2sim.data.checkpoint import load_checkpoint, save_checkpoint
from moe2sim.errors import InputError

CHECKPOINT_FORMAT = "moe2sim-gate"
CHECKPOINT_VERSION = 2
EPS = 1e-4
PRIOR_CLIP = 0.02


@dataclass
class TrainConfig:
    loss: Literal["bce", "mixture"] = "bce"
    hidden: int = 256
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_epochs: int = 60
    patience: int = 15
    task_epochs: int = 300     # full-batch epochs of the linear task head
    task_lr: float = 0.05
    seed: int = 0


@contextmanager
def one_thread():
    """Run the gate's small torch ops on one thread: a process whose torch never started its
    thread pool can fork workers safely (gymnasium's AsyncVectorEnv, multiprocessing on Linux)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def task_accuracy(u: np.ndarray, tasks: np.ndarray, names: list[str]) -> np.ndarray:
    """(T, N) A[t, n]: mean of u (P(right)) over task t's prompts."""
    return np.stack([u[tasks == t].mean(axis=0) for t in names]).astype(np.float32)


class GateNet(nn.Module):
    """g(e) = logit(p(t|e) @ A) + MLP(e); see the module docstring."""

    def __init__(self, dim: int, task_acc: torch.Tensor, hidden: int, dropout: float):
        super().__init__()
        n_tasks, n_experts = task_acc.shape
        self.register_buffer("task_acc", task_acc)
        self.task_head = nn.Linear(dim, n_tasks)
        self.residual = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, n_experts))
        nn.init.zeros_(self.residual[-1].weight)
        nn.init.zeros_(self.residual[-1].bias)

    def task_posterior(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """p(t | e); rows whose task index is known (≥ 0) get its one-hot instead (label-aware)."""
        p = torch.softmax(self.task_head(x), dim=1)
        if task is None:
            return p
        onehot = nn.functional.one_hot(task.clamp(min=0), p.shape[1]).to(p.dtype)
        return torch.where((task >= 0)[:, None], onehot, p)

    def prior(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        pi = (self.task_posterior(x, task) @ self.task_acc).clamp(PRIOR_CLIP, 1 - PRIOR_CLIP)
        return torch.log(pi) - torch.log1p(-pi)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        return self.prior(x, task) + self.residual(x)


def gate_loss(kind: str, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    if kind == "bce":
        return nn.functional.binary_cross_entropy_with_logits(logits, u)
    return -torch.log(EPS + (torch.softmax(logits, dim=1) * u).sum(dim=1)).mean()


@dataclass
class Gate:
    """A trained gate with what it was trained on; `logits` is what policies call."""

    net: GateNet
    experts: list[str]
    tasks: list[str]
    dim: int
    encoder: str
    config: TrainConfig
    info: dict[str, Any] = field(default_factory=dict)

    def task_index(self, tasks: np.ndarray | None) -> torch.Tensor | None:
        """Index of each prompt's task among those trained on (−1: unseen); None routes from the prompt alone."""
        if tasks is None:
            return None
        index = {t: i for i, t in enumerate(self.tasks)}
        return torch.as_tensor([index.get(str(t), -1) for t in tasks], dtype=torch.long)

    def logits(self, x: np.ndarray, tasks: np.ndarray | None = None) -> np.ndarray:
        """(n, N) logits from the prompts' embeddings; with `tasks`, the label-aware variant."""
        if x.shape[1] != self.dim:
            raise InputError(None, "embedding", f"dimension {x.shape[1]}, the gate expects {self.dim}")
        self.net.eval()
        with torch.no_grad(), one_thread():
            return self.net(torch.as_tensor(x, dtype=torch.float32), self.task_index(tasks)).numpy()

    def save(self, path: Path) -> None:
        payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "experts": self.experts,
                   "tasks": self.tasks, "dim": self.dim, "encoder": self.encoder, "config": asdict(self.config),
                   "info": self.info, "state_dict": self.net.state_dict()}
        save_checkpoint(payload, path)

    @classmethod
    def load(cls, path: Path) -> "Gate":
        payload = load_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "train one with `moe2sim train-gate`")
        try:
            config = TrainConfig(**payload["config"])
            net = GateNet(payload["dim"], payload["state_dict"]["task_acc"], config.hidden, config.dropout)
            with one_thread():
                net.load_state_dict(payload["state_dict"])
            return cls(net, list(payload["experts"]), list(payload["tasks"]), payload["dim"], payload["encoder"],
                       config, payload["info"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise InputError(path, "state_dict", f"damaged checkpoint: {type(exc).__name__}: {exc}") from None


def task_mean(correct: np.ndarray, tasks: np.ndarray) -> float:
    """Unweighted mean over tasks of the per-task mean (the published metric)."""
    return float(np.mean([correct[tasks == t].mean() for t in dict.fromkeys(tasks)]))


def train_gate(x: np.ndarray, tasks: np.ndarray, u: np.ndarray, x_val: np.ndarray, tasks_val: np.ndarray,
               u_val: np.ndarray, experts: list[str], encoder: str, config: TrainConfig = TrainConfig()) -> Gate:
    """Train on (embedding, P(right) per expert); task labels are targets of the task head only. Keeps the
    epoch with the best validation k = 1 task-mean accuracy, the prior alone (epoch −1) included."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    names = list(dict.fromkeys(str(t) for t in tasks))
    net = GateNet(x.shape[1], torch.as_tensor(task_accuracy(u, tasks, names)), config.hidden, config.dropout)
    gate = Gate(net, list(experts), names, int(x.shape[1]), encoder, config)
    xt, ut = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(u, dtype=torch.float32)
    start = time.perf_counter()
    with one_thread():
        task_opt = torch.optim.AdamW(net.task_head.parameters(), lr=config.task_lr, weight_decay=config.weight_decay)
        target = gate.task_index(tasks)
        for _ in range(config.task_epochs if len(names) > 1 else 0):
            task_opt.zero_grad()
            nn.functional.cross_entropy(net.task_head(xt), target).backward()
            task_opt.step()
        net.task_head.requires_grad_(False)

        def val_accuracy() -> float:
            top1 = gate.logits(x_val).argmax(axis=1)
            return task_mean(u_val[np.arange(len(top1)), top1], tasks_val)

        prior_only = val_accuracy()
        best = (prior_only, {k: v.clone() for k, v in net.state_dict().items()}, -1)
        opt = torch.optim.AdamW(net.residual.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        epoch = -1
        for epoch in range(config.max_epochs):
            net.train()
            for idx in torch.randperm(len(xt), generator=gen).split(config.batch_size):
                opt.zero_grad()
                gate_loss(config.loss, net(xt[idx]), ut[idx]).backward()
                opt.step()
            acc = val_accuracy()
            if acc > best[0]:
                best = (acc, {k: v.clone() for k, v in net.state_dict().items()}, epoch)
            elif epoch - best[2] >= config.patience:
                break
        net.load_state_dict(best[1])
    gate.info = {"val_task_mean_accuracy": best[0], "val_prior_only_accuracy": prior_only, "best_epoch": best[2],
                 "beat_prior": best[2] >= 0, "epochs_run": epoch + 1, "train_prompts": int(len(x)),
                 "val_prompts": int(len(x_val)), "train_seconds": round(time.perf_counter() - start, 2)}
    return gate
