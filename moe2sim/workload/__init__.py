"""The workload: when queries arrive, of which category, with which prompt and lengths."""
from moe2sim.workload.generator import BYTES_PER_TOKEN, CHUNK, QueryBatch, Workload, token_lengths

__all__ = ["BYTES_PER_TOKEN", "CHUNK", "QueryBatch", "Workload", "token_lengths"]
