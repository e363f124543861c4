"""The gating network g(x; θ) ∈ R^N of MoE² and its training.

Model: for a prompt with embedding e and task (application category) t,
    g(x) = b[t] + W2 · Dropout(GELU(W1 · [e, onehot(t)]))
where b[t] = logit of each expert's train accuracy on task t (fixed, not trained) and W2 starts
at zero, so training starts from "best expert per task" and moves away only as far as the
prompt embeddings earn on held-out data. Unknown tasks get the pooled prior.

Losses (TrainConfig.loss):
- "bce" (default): each logit predicts whether that expert answers correctly,
  Σ_n BCE(σ(g_n(x)), correct_n). Separable over experts, so masking experts outside a subset S
  leaves exactly the per-expert predictions a gate trained on S alone would make apart from the
  shared hidden layer — the MoE² optimality-preservation claim holds by construction, and
  benchmarks/bench_gate.py measures it. It also generalised better on the bundled data.
- "mixture": MoE²'s cross-entropy of the mixture's output, -log(ε + Σ_n softmax(g)_n s_n), with
  s_n the outcome score (probability the expert is right).
Trained once on all N experts on the train split, early-stopped on its validation part
(traces.validation_mask); restriction to S masks logits and never retrains.
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
CHECKPOINT_VERSION = 1
EPS = 1e-4


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


def task_prior_logits(correct: np.ndarray, tasks: np.ndarray, names: list[str]) -> np.ndarray:
    """(T + 1, N) logit of each expert's accuracy per task; the last row pools all tasks."""
    rows = [correct[tasks == t].mean(axis=0) for t in names] + [correct.mean(axis=0)]
    p = np.clip(np.stack(rows), 0.02, 0.98)
    return np.log(p / (1 - p)).astype(np.float32)


class GateNet(nn.Module):
    def __init__(self, dim: int, prior: torch.Tensor, hidden: int, dropout: float):
        super().__init__()
        n_tasks, n_experts = prior.shape[0] - 1, prior.shape[1]
        self.register_buffer("prior", prior)
        self.layers = nn.Sequential(nn.Linear(dim + n_tasks, hidden), nn.GELU(), nn.Dropout(dropout),
                                    nn.Linear(hidden, n_experts))
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(task, self.prior.shape[0])[:, :-1].to(x.dtype)
        return self.prior[task] + self.layers(torch.cat([x, onehot], dim=1))


def gate_loss(kind: str, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    if kind == "bce":
        return nn.functional.binary_cross_entropy_with_logits(logits, (scores > 0).to(logits.dtype))
    return -torch.log(EPS + (torch.softmax(logits, dim=1) * scores).sum(dim=1)).mean()


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

    def task_index(self, tasks: np.ndarray) -> torch.Tensor:
        index = {t: i for i, t in enumerate(self.tasks)}
        return torch.as_tensor([index.get(str(t), len(self.tasks)) for t in tasks], dtype=torch.long)

    def logits(self, x: np.ndarray, tasks: np.ndarray) -> np.ndarray:
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
            net = GateNet(payload["dim"], payload["state_dict"]["prior"], config.hidden, config.dropout)
            with one_thread():
                net.load_state_dict(payload["state_dict"])
            return cls(net, list(payload["experts"]), list(payload["tasks"]), payload["dim"], payload["encoder"],
                       config, payload["info"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise InputError(path, "state_dict", f"damaged checkpoint: {type(exc).__name__}: {exc}") from None


def train_gate(x: np.ndarray, tasks: np.ndarray, scores: np.ndarray, x_val: np.ndarray, tasks_val: np.ndarray,
               scores_val: np.ndarray, experts: list[str], encoder: str, config: TrainConfig = TrainConfig()) -> Gate:
    """Train on (embedding, task, per-expert score); keep the epoch with the best validation top-1 accuracy."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    names = list(dict.fromkeys(str(t) for t in tasks))
    prior = torch.as_tensor(task_prior_logits(scores > 0, tasks, names))
    net = GateNet(x.shape[1], prior, config.hidden, config.dropout)
    gate = Gate(net, list(experts), names, int(x.shape[1]), encoder, config)
    xt, st, tt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32), \
        gate.task_index(tasks)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    correct_val = scores_val > 0

    def val_accuracy() -> float:
        top1 = gate.logits(x_val, tasks_val).argmax(axis=1)
        return float(correct_val[np.arange(len(top1)), top1].mean())

    best = (val_accuracy(), {k: v.clone() for k, v in net.state_dict().items()}, -1)
    start = time.perf_counter()
    epoch = -1  # max_epochs = 0 keeps the untrained task-prior gate
    for epoch in range(config.max_epochs):
        net.train()
        for idx in torch.randperm(len(xt), generator=gen).split(config.batch_size):
            opt.zero_grad()
            gate_loss(config.loss, net(xt[idx], tt[idx]), st[idx]).backward()
            opt.step()
        acc = val_accuracy()
        if acc > best[0]:
            best = (acc, {k: v.clone() for k, v in net.state_dict().items()}, epoch)
        elif epoch - best[2] >= config.patience:
            break
    net.load_state_dict(best[1])
    gate.info = {"val_top1_accuracy": best[0], "best_epoch": best[2], "epochs_run": epoch + 1,
                 "train_prompts": int(len(x)), "val_prompts": int(len(x_val)),
                 "train_seconds": round(time.perf_counter() - start, 2)}
    return gate
