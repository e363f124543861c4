"""Assembling a runnable twin from a scenario: the one factory (experts, workload, policy, selector)
and the Twin that simulates it."""
from moe2sim.twin.twin import Twin

__all__ = ["Twin"]
