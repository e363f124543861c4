"""The policy object (gate + selector + aggregation) that the simulator, the gym environment and
the live runner all call."""
from moe2sim.policy.mixture import MixturePolicy

__all__ = ["MixturePolicy"]
