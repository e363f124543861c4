"""Loading a scenario: YAML file + `--set dotted.key=value` overrides -> validated Scenario."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from moe2sim.data.bundled import bundled_path
from moe2sim.errors import InputError, from_validation
from moe2sim.scenario.schema import Scenario


def apply_override(raw: dict[str, Any], assignment: str, flag: str = "--set") -> tuple[str | int, ...]:
    """Apply one `dotted.key=value` to the raw YAML tree (value parsed as YAML); returns the location it
    set (keys and list indices, as pydantic reports errors). Errors name `flag`.

    A list element is addressed by index (`experts.0.slots=2`) or by its `name`
    (`categories.gsm8k.latency_budget_s=4`).
    """
    dotted, sep, text = assignment.partition("=")
    keys = dotted.strip().split(".")
    if not sep or not all(keys):
        raise InputError(flag, assignment, "expected dotted.key=value")
    value = _yaml_value(text, flag, dotted)
    node: Any = raw
    loc: list[str | int] = []
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            idx = _list_index(node, key, dotted, flag)
            loc.append(idx)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            loc.append(key)
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise InputError(flag, dotted, f"'{'.'.join(keys[:i])}' is not a mapping or list")
    return tuple(loc)


def _yaml_value(text: str, flag: str, dotted: str) -> Any:
    """An override's value, parsed as YAML (`3`, `[1, 2]`, `null`); malformed YAML names the flag."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(flag, dotted, f"malformed YAML value {text!r}: {getattr(exc, 'problem', None) or exc}") from None


def _list_index(items: list[Any], key: str, dotted: str, flag: str) -> int:
    if key.isdigit() and int(key) < len(items):
        return int(key)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return i
    names = [item.get("name") for item in items if isinstance(item, dict) and "name" in item]
    raise InputError(flag, dotted, f"no list element with index or name '{key}'"
                     + (f" (names: {', '.join(map(str, names))})" if names else ""))


def bundled_scenarios() -> list[str]:
    return sorted(p.stem for p in bundled_path("scenarios").glob("*.yaml"))


def resolve_scenario(path: Path) -> Path:
    """The path itself, or the bundled scenario a bare name refers to."""
    if "\0" in str(path):
        raise InputError(repr(str(path)), None, "a file name cannot contain a NUL character")
    if _exists(path) or path.parent != Path("."):
        return path
    bundled = bundled_path(f"scenarios/{path.stem}.yaml")
    return bundled if bundled.is_file() and path.suffix in ("", ".yaml") else path


def _exists(path: Path) -> bool:
    """Whether the path exists; a name the OS cannot look up (too long) does not."""
    try:
        return path.exists()
    except OSError:
        return False


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                  flags: list[tuple[str, str]] | tuple[tuple[str, str], ...] = ()) -> Scenario:
    """Read, override and validate a scenario; any problem raises InputError naming file and field.

    `overrides` are `--set` assignments; `flags` are (flag, assignment) pairs a command derived from its
    own flags (`select --energy-budget 5` -> ("--energy-budget", "energy_budget_J=5")), applied after
    them: an error in a field an override or a flag set names `--set` or that flag, not the file.
    A bare name that is no file here (`quickstart`, `paper.yaml`) is the bundled scenario of that name."""
    if not isinstance(path, (str, Path)):
        raise InputError(None, "scenario", f"expected a file path or a bundled scenario name, got {type(path).__name__}")
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
    except RecursionError:
        raise InputError(path, None, "malformed YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise InputError(path, where, f"malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise InputError(path, None, "a scenario must be a YAML mapping")
    blame = {apply_override(raw, assignment, flag): flag
             for flag, assignment in [*(("--set", a) for a in overrides), *flags]}
    raw.pop("file", None)
    try:
        return Scenario.model_validate({**raw, "file": path.resolve()})
    except ValidationError as exc:
        raise from_validation(path, exc, blame) from None
    except RecursionError:  # a self-referencing YAML alias
        raise InputError(path, None, "a YAML alias refers to itself") from None
