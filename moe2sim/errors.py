"""The one error type for bad user input: it names the file and the field at fault.

The CLI turns it into a one-line message and exit code 2; everything else that goes
wrong is a bug and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input: which file, which field (dotted path or column), and what is wrong."""

    def __init__(self, file: str | Path | None, field: str | None, message: str):
        self.file = str(file) if file is not None else None
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        return f"{where}: {self.message}" if where else self.message
