"""The SimPy model of MoE² serving (engine) and the per-query records it writes (records)."""
