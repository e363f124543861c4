"""argparse types and helpers shared by moe2sim's commands (`moe2sim`, `moe2sim-hw`) and the examples: a
bad value raises ArgumentTypeError, which argparse prints with the flag's name before exiting with code 2."""
from __future__ import annotations

import argparse
import math
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


def whole_in(low: int, high: int) -> Callable[[str], int]:
    """A whole number from low to high."""
    def parse(text: str) -> int:
        value = whole(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}, got {value}")
        return value
    return parse


def number(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def number_in(low: float, high: float = math.inf) -> Callable[[str], float]:
    """A finite number from low to high (no upper bound by default)."""
    def parse(text: str) -> float:
        value = number(text)
        if not low <= value <= high:
            span = f"from {low:g} to {high:g}" if high < math.inf else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def positive_floats(text: str) -> list[float]:
    """Comma-separated finite numbers > 0 (at least one)."""
    values = [positive_float(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless the help already states it."""

    EMPTY = {False: "off", None: "none"}

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.required or action.default is argparse.SUPPRESS:
            return text
        default = action.default if action.default != [] else None
        shown = self.EMPTY.get(default, "%(default)s") if isinstance(default, (bool, type(None))) else "%(default)s"
        return f"{text} (default: {shown})"


def value_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flags of every sub-command that take a value (not switches like --quiet)."""
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices.values()
    return {flag for p in subs for a in p._actions if a.nargs is None and a.option_strings for flag in a.option_strings}


def attach_values(argv: list[str], flags: set[str]) -> list[str]:
    """`--flag -1e3` as `--flag=-1e3`: a value that starts with '-' is the flag's value, not another flag
    (argparse only takes plain negative integers and decimals that way)."""
    out: list[str] = []
    for item in argv:
        if out and out[-1] in flags and item.startswith("-") and item not in flags and item != "--":
            out[-1] = f"{out[-1]}={item}"
        else:
            out.append(item)
    return out
