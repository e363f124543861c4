"""argparse types shared by moe2sim's commands and the examples: a bad value raises
ArgumentTypeError, which argparse prints with the flag's name before exiting with code 2."""
from __future__ import annotations

import argparse
from typing import Callable


def whole(text: str) -> int:
    """A whole number."""
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def at_least(least: int, most: int | None = None) -> Callable[[str], int]:
    """A whole number ≥ least (and ≤ most, when given)."""
    def parse(text: str) -> int:
        value = whole(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:,}, got {value:,}")
        return value
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def positive_floats(text: str) -> list[float]:
    """Comma-separated finite numbers > 0 (at least one)."""
    values = [positive_float(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values
