"""A sweep's journal: result rows appended to DIR/sweep.partial.jsonl as they finish, so an interrupted
sweep restarted on the same folder skips what is done.

Line 1 is a header {"journal": "moe2sim sweep", "fingerprint": F}; every other line one result row
(strict JSON: NaN as null). F hashes everything that changes a row's content (the scenario with its
sweep's budget lists and methods left out, plus `simulate`), so a restart may add budgets, methods or
replications and reuses the rows it has; a different F starts the journal afresh. A torn last line (a
crash mid-write) is ignored. Rows are keyed by `key` (axis, value, method, seed).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

from moe2sim.experiments.outputs import strict

NAME = "sweep.partial.jsonl"
TITLE = "moe2sim sweep"


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """The row as it reads back from the journal (strict JSON round trip), so fresh and resumed rows are equal."""
    return json.loads(json.dumps(strict(row), allow_nan=False))


class Journal:
    """Append-only rows of one sweep, loaded back on a restart."""

    def __init__(self, path: Path, fingerprint: str, key: Callable[[dict[str, Any]], Hashable]) -> None:
        self.path, self.fingerprint, self.key = path, fingerprint, key
        self.rows: dict[Hashable, dict[str, Any]] = self._load()
        # rewritten whole: drops a torn last line, duplicates and another sweep's rows
        self.path.write_text("".join(json.dumps(r) + "\n" for r in
                                     [{"journal": TITLE, "fingerprint": fingerprint}, *self.rows.values()]))

    def _load(self) -> dict[Hashable, dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return {}
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            return {}
        if header != {"journal": TITLE, "fingerprint": self.fingerprint}:
            return {}
        rows = {}
        for line in lines[1:]:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows[self.key(row)] = row
        return rows

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write the rows (one line each, flushed) and remember them."""
        with self.path.open("a") as f:
            for row in rows:
                f.write(json.dumps(strict(row), allow_nan=False) + "\n")
                self.rows[self.key(row)] = row
            f.flush()


def fingerprint(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
