"""The one error type for bad user input: it names the file and the field at fault.

The CLI turns it into a one-line message and exit code 2; everything else that goes
wrong is a bug and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pydantic


def _one_line(text: str) -> str:
    """A name as it goes into a one-line message: line breaks and other control characters escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class InputError(ValueError):
    """Bad input: which file (or flag, or keyword argument), which field (dotted path or column), and what
    is wrong. A ValueError, so library callers (e.g. the gym env's constructor) get the usual type."""

    def __init__(self, file: str | Path | None, field: str | None, message: str):
        self.file = _one_line(str(file)) if file is not None else None
        self.field = _one_line(field) if field is not None else None
        self.message = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
        super().__init__(file, field, message)  # args must rebuild the error (SimPy re-raises copies)

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


def from_validation(path: str | Path, exc: "pydantic.ValidationError",
                    blame: dict[tuple, str] | None = None) -> InputError:
    """The first pydantic error as an InputError; an unknown key is reported before anything else.

    `blame` maps a field location (a tuple of keys and list indices) to the flag that set it: an error
    at or under that location names the flag instead of `path`."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    flag = next((f for prefix, f in (blame or {}).items() if loc[:len(prefix)] == prefix), None)
    field = ".".join(str(p) for p in loc) or None
    message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InputError(flag or path, field, message + more)
