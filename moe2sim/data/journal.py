"""A journal: records appended to a JSON-lines file as a long run produces them, so a crash or Ctrl-C keeps
what was done and a restart can resume from it (a sweep's rows; a live run's queries, legs and attempts).

Line 1 is a header {"journal": TITLE, "fingerprint": F}; every other line one record
{"kind": K, "record": {...}} (strict JSON: NaN as null). F hashes whatever changes a record's meaning: a
journal opened with `resume` keeps the records of a file with the same title and F, and starts afresh
(rewrites the file) on another F. A torn last line (a crash mid-write) is ignored. Each append is one
write per record, flushed, and with `durable` also fsync'ed, so a record of kind "send" appended before
an action is on disk before the action happens (write-ahead). A file at the path that is not a journal of
this title was not written by moe2sim: it is refused, never overwritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable

from moe2sim.data.atomic import write_text_atomic
from moe2sim.data.strict import dumps
from moe2sim.errors import InputError


def fingerprint(payload: str) -> str:
    """A short hash of what a journal's records depend on."""
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def roundtrip(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it reads back from a journal, so fresh and resumed records compare equal."""
    return json.loads(dumps(record))


def read(path: Path) -> tuple[dict[str, Any] | None, list[tuple[str, dict[str, Any]]]]:
    """A journal file's header (None if the file is missing or its first line is not a JSON object) and its
    (kind, record) entries; torn or foreign lines are skipped. Reading never changes the file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None, []
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:  # a torn line
            parsed.append(None)
    header = parsed[0] if parsed and isinstance(parsed[0], dict) else None
    entries = [(e["kind"], e["record"]) for e in parsed[1:]
               if isinstance(e, dict) and isinstance(e.get("kind"), str) and isinstance(e.get("record"), dict)]
    return header, entries


class Journal:
    """One journal file, open for appending; `records(kind)` are the records it holds (resumed and new)."""

    def __init__(self, path: Path, title: str, fingerprint: str = "", resume: bool = True,
                 durable: bool = False) -> None:
        self.path, self.durable = Path(path), durable
        self.header = {"journal": title, "fingerprint": fingerprint}
        header, entries = read(self.path)
        if self.path.exists() and self.path.stat().st_size and (header or {}).get("journal") != title:
            raise InputError(str(self.path), "journal", f"exists and is not a {title} journal; it will not be "
                             "overwritten: choose another output folder")
        self.kept = entries if resume and header == self.header else []
        self.lock = threading.Lock()
        # rewritten whole, atomically: drops a torn last line and another run's records, keeps the resumed ones
        write_text_atomic(self.path, "".join(dumps(line) + "\n" for line in
                                             [self.header, *({"kind": k, "record": r} for k, r in self.kept)]))
        self.file = self.path.open("a", encoding="utf-8")

    def _sync(self) -> None:
        self.file.flush()
        if self.durable:
            os.fsync(self.file.fileno())

    def records(self, kind: str) -> list[dict[str, Any]]:
        """The records of `kind`, in the order they were appended."""
        with self.lock:
            return [r for k, r in self.kept if k == kind]

    def append(self, kind: str, records: Iterable[dict[str, Any]]) -> None:
        """Append the records of `kind` (one line each), flushed (and fsync'ed if durable) before returning."""
        records = [roundtrip(r) for r in records]
        if not records:
            return
        with self.lock:
            self.file.write("".join(dumps({"kind": kind, "record": r}) + "\n" for r in records))
            self._sync()
            self.kept.extend((kind, r) for r in records)

    def close(self) -> None:
        with self.lock:
            self.file.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
