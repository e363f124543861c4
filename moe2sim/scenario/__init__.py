"""The scenario: its schema (what a user can set) and loading it from YAML with overrides."""
from moe2sim.scenario.load import apply_override, load_scenario
from moe2sim.scenario.schema import (Bursts, Category, Diurnal, EnvConfig, Expert, FixedTokens, GeometricTokens, Link,
                                     Outage, DailyValue,
                                     LognormalTokens, Outputs, Poisson, PolicyConfig, Replay, RewardWeights, Scenario,
                                     SelectionConfig, SelectionMethod, Site, SiteDistribution, SweepConfig, SweepMethod, Traces,
                                     TraceService)

__all__ = ["Bursts", "Category", "Diurnal", "EnvConfig", "Expert", "FixedTokens", "GeometricTokens", "Link", "Outage", "DailyValue",
           "LognormalTokens", "Outputs", "Poisson", "PolicyConfig", "Replay", "RewardWeights", "Scenario",
           "SelectionConfig", "SelectionMethod", "Site", "SiteDistribution", "SweepConfig", "SweepMethod", "Traces", "TraceService", "apply_override", "load_scenario"]
