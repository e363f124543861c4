"""The `moe2sim` command: parse, call one library function, print. Heavy modules load lazily."""
from moe2sim.cli.main import main

__all__ = ["main"]
