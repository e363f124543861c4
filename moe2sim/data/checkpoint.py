"""Versioned torch checkpoints (gate, agents): a dict with `format` and `version`, saved atomically
and checked on load; every problem is an InputError naming the file."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from moe2sim.data.atomic import atomic_path
from moe2sim.errors import InputError


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, fmt: str, version: int, hint: str) -> dict[str, Any]:
    """The payload of a `fmt` checkpoint of this `version`; `hint` says how to make a new one."""
    import torch

    if not path.is_file():
        raise InputError(path, None, f"{fmt} checkpoint not found ({hint})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # torch's words for a class it will not load safely
            raise InputError(path, None, f"not a {fmt} checkpoint: {type(exc).__name__}") from None
        raise InputError(path, None, f"a {fmt} checkpoint may hold only tensors and plain Python types "
                                     "(dict, list, str, int, float; save numpy arrays with .tolist())") from None
    except Exception as exc:  # torch raises several types for a corrupt file
        raise InputError(path, None, f"not a {fmt} checkpoint: {type(exc).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise InputError(path, "format", f"not a {fmt} checkpoint")
    if payload.get("version") != version:
        raise InputError(path, "version", f"version {payload.get('version')}, this moe2sim reads {version}; {hint}")
    return payload
