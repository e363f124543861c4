"""Experiments: running a scenario, rolling out an agent, budget sweeps and replications, on this machine
or a Ray cluster (executors); what they write is report/'s (report/publish.py)."""
