"""Bundled data, installed with the package: `scenarios/` and `traces/` of the repository are the
sub-packages moe2sim.bundled.scenarios and moe2sim.bundled.traces (pyproject's package-dir)."""
