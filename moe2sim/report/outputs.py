"""The output contract: a run writes into DIR only files it names in DIR/.moe2sim-manifest.json,
and never deletes or overwrites a file it did not write.

Before any work, `check` refuses an output folder that is a file, cannot be written, or is a
non-empty folder moe2sim did not write (unless `allow_existing`), and any planned file name that
would overwrite a user's file. Results are written into a hidden staging folder beside DIR and
moved in only when all of them exist; files a previous run listed in the manifest and this run does
not write are removed (they were ours); the new manifest is written last. An interrupted or failed
run leaves DIR as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from moe2sim.data.atomic import write_text_atomic
from moe2sim.data.strict import dumps
from moe2sim.errors import InputError

MANIFEST = ".moe2sim-manifest.json"


def usable_name(path: Path, flag: str) -> None:
    """Refuse a name no file system can hold: a NUL, a component over 220 bytes (255 less room for the
    staging and temporary names made from it), over 4,000 bytes in all."""
    text = str(path)
    if "\0" in text:
        raise InputError(flag, repr(text), "a file or folder name cannot contain a NUL character")
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in path.parts), default=0)
    if longest > 220 or len(text.encode("utf-8", "surrogateescape")) > 4000:
        raise InputError(flag, text[:80] + "...", "the name is too long for the file system")


@dataclass(frozen=True)
class OutputDir:
    path: Path
    flag: str = "--out"
    allow_existing: bool = False

    def ours(self) -> set[str]:
        """File names a previous moe2sim run wrote here (empty if none)."""
        try:
            return set(json.loads((self.path / MANIFEST).read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def check(self, names: Iterable[str] = ()) -> None:
        """Refuse, before any work, an output location that would lose a user's file or cannot be written."""
        path = self.path
        usable_name(path, self.flag)
        if path.exists() and not path.is_dir():
            raise InputError(self.flag, str(path), "exists and is not a folder")
        ours = self.ours()
        if path.is_dir():
            foreign = sorted(p.name for p in path.iterdir() if p.name not in ours and p.name != MANIFEST)
            if foreign and not (self.allow_existing or (path / MANIFEST).exists()):
                raise InputError(self.flag, str(path), f"is a non-empty folder moe2sim did not write (holds "
                                 f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); choose a new or "
                                 "empty folder, or pass --allow-existing to write beside those files")
            clash = sorted(set(names) & set(foreign))
            if clash:
                raise InputError(self.flag, str(path / clash[0]), "exists and was not written by moe2sim; "
                                 "it will not be overwritten: choose another output folder")
        parent = next(p for p in (path, *path.parents) if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(self.flag, str(path), f"cannot write into {parent}: permission denied")

    @classmethod
    def of(cls, out: "OutputDir | str | Path") -> "OutputDir":
        """An OutputDir as is, or a plain path (a library caller's folder; nothing foreign in it is touched)."""
        return out if isinstance(out, OutputDir) else cls(Path(out))

    def adopt(self, names: Iterable[str], fresh: bool = False) -> None:
        """Before writing `names` into DIR as a run goes (a live run's or a sweep's journal): list them as ours
        beside the files the manifest lists; `fresh` first removes those files (a previous run's, ours), so
        nothing old looks current."""
        names = set(names)
        self.check(names)
        self.path.mkdir(parents=True, exist_ok=True)
        previous = self.ours()
        if fresh:
            for name in previous:
                (self.path / name).unlink(missing_ok=True)
        listed = names if fresh else previous | names
        write_text_atomic(self.path / MANIFEST, json.dumps({"writer": "moe2sim", "files": sorted(listed)}, indent=1))

    @contextmanager
    def staged(self, keep: Iterable[str] = ()) -> Iterator[Path]:
        """A staging folder whose files become DIR's results only if the block completes; files named in
        `keep` (written in DIR directly, see `adopt`) stay and stay listed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent))
        try:
            yield stage
            written = sorted(p.name for p in stage.iterdir())
            self.check(written)
            ours = self.ours()
            kept = {name for name in keep if name in ours and (self.path / name).exists()}
            self.path.mkdir(exist_ok=True)
            for name in ours - set(written) - kept:
                (self.path / name).unlink(missing_ok=True)
            for name in written:
                (stage / name).replace(self.path / name)
            write_text_atomic(self.path / MANIFEST, json.dumps({"writer": "moe2sim", "files": sorted({*written, *kept})},
                                                                indent=1))
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """`obj` as strict JSON (NaN and ±inf as null)."""
    path.write_text(dumps(obj, indent=2))


def write_table(df: pd.DataFrame, path: Path, fmt: str) -> None:
    """`df` as PATH.parquet or PATH.csv (`fmt`)."""
    if fmt == "parquet":
        df.to_parquet(path.with_suffix(".parquet"), index=False)
    else:
        df.to_csv(path.with_suffix(".csv"), index=False)
