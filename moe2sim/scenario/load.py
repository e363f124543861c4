"""Loading a scenario: YAML file + `--set dotted.key=value` overrides -> validated Scenario."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from moe2sim.data.bundled import bundled_path
from moe2sim.errors import InputError, from_validation
from moe2sim.scenario.schema import Scenario


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` to the raw YAML tree (value parsed as YAML).

    A list element is addressed by index (`experts.0.slots=2`) or by its `name`
    (`categories.gsm8k.latency_budget_s=4`).
    """
    if "=" not in assignment:
        raise InputError("--set", assignment, "expected dotted.key=value")
    dotted, text = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    value = yaml.safe_load(text)
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            idx = _list_index(node, key, dotted)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise InputError("--set", dotted, f"'{'.'.join(keys[:i])}' is not a mapping or list")


def _list_index(items: list[Any], key: str, dotted: str) -> int:
    if key.isdigit() and int(key) < len(items):
        return int(key)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return i
    raise InputError("--set", dotted, f"no list element with index or name '{key}'")


def bundled_scenarios() -> list[str]:
    return sorted(p.stem for p in bundled_path("scenarios").glob("*.yaml"))


def resolve_scenario(path: Path) -> Path:
    """The path itself, or the bundled scenario a bare name refers to."""
    if path.exists() or path.parent != Path("."):
        return path
    bundled = bundled_path(f"scenarios/{path.stem}.yaml")
    return bundled if bundled.is_file() and path.suffix in ("", ".yaml") else path


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override and validate a scenario; any problem raises InputError naming file and field.

    A bare name that is no file here (`quickstart`, `paper.yaml`) is the bundled scenario of that name."""
    path = resolve_scenario(Path(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, f"file not found (bundled scenarios: {', '.join(bundled_scenarios())})") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"not UTF-8 text (byte {exc.start}): a scenario is a YAML text file") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise InputError(path, where, f"malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise InputError(path, None, "a scenario must be a YAML mapping")
    for assignment in overrides:
        apply_override(raw, assignment)
    raw.pop("file", None)
    try:
        return Scenario.model_validate({**raw, "file": path.resolve()})
    except ValidationError as exc:
        raise from_validation(path, exc) from None
