"""Experiments: running a scenario, rolling out an agent, budget sweeps, and the output folder
contract they all write through."""
