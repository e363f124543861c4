"""The package layout keeps its promises: data flows one way through the sub-packages (no import of a
higher layer, lazy imports included), hardware/ (installed as moe2sim.hardware) imports moe2sim and never
the reverse, every code package ships, and the bundled data is found by the documented rule."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: a module may import its own package and lower layers only (see docs/ARCHITECTURE.md).
LAYERS = [{"errors", "bundled"}, {"data"}, {"scenario"}, {"devices", "workload"}, {"routing"}, {"selection"},
          {"policy"}, {"sim"}, {"twin"}, {"report"}, {"envs"}, {"agents"}, {"experiments"}, {"cli"}]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def imports(path: Path) -> set[str]:
    """Every moe2sim module (moe2sim.hardware included) a file imports, at top level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in ("moe2sim", "hardware")}


HARDWARE = "moe2sim.hardware"


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_imports_only_go_down_the_layers():
    upward = []
    for path in sorted((ROOT / "moe2sim").rglob("*.py")):
        rel = path.relative_to(ROOT / "moe2sim")
        own = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem in RANK else None
        for module in imports(path):
            assert not module.startswith(("hardware", HARDWARE)), f"{rel} imports {module}: moe2sim never imports hardware/"
            target = package_of(module)
            if own is None or target is None or target == own:
                continue
            assert target in RANK, f"{module} (imported by {rel}) is in no layer of this test"
            if RANK[target] >= RANK[own]:
                upward.append(f"{rel} -> {module}")
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_every_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("moe2sim/**/__init__.py")}
    on_disk |= {".".join(("moe2sim", *p.parent.relative_to(ROOT).parts)) for p in ROOT.glob("hardware/**/__init__.py")}
    on_disk |= {"moe2sim.bundled.scenarios", "moe2sim.bundled.traces"}
    assert on_disk == listed


def test_hardware_imports_moe2sim_but_not_the_other_way():
    used = set().union(*(imports(p) for p in (ROOT / "hardware").rglob("*.py")))
    assert any(m.startswith("moe2sim") and not m.startswith(HARDWARE) for m in used)
    assert not any(m.split(".")[0] == "hardware" for m in used), "hardware/ imports itself as moe2sim.hardware"


def test_hardware_installs_under_the_project_name():
    """No generic top-level `hardware` package: the folder is moe2sim.hardware, for `python -m` too."""
    from moe2sim.hardware import cli

    assert Path(cli.__file__).resolve().parent == ROOT / "hardware"
    run = subprocess.run([sys.executable, "-m", HARDWARE, "--help"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT.parent)
    assert run.returncode == 0 and "collect" in run.stdout, run.stderr


@pytest.mark.parametrize("relative", ["scenarios/paper.yaml", "scenarios/quickstart.yaml", "scenarios/budget_env.yaml",
                                      "traces/prompts.parquet", "traces/gate.pt", "traces/profiles"])
def test_bundled_data_is_found(relative):
    from moe2sim.data.bundled import bundled_path

    assert bundled_path(relative).exists()


def architecture_rows() -> set[str]:
    """The first column of docs/ARCHITECTURE.md's "Where each concern lives" table: `pkg/` or `module.py`."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = text.split("## Where each concern lives", 1)[1].split("\n## ", 1)[0]
    return {line.split("|")[1].strip().strip("`") for line in table.splitlines()
            if line.startswith("| `")}


def test_architecture_lists_every_package_and_only_those():
    """Every sub-package of moe2sim (and hardware/) has its row, and every row names one that exists."""
    on_disk = {f"{p.parent.name}/" for p in (ROOT / "moe2sim").glob("*/__init__.py")} | {"hardware/"}
    on_disk |= {p.name for p in (ROOT / "moe2sim").glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert architecture_rows() == on_disk


def test_only_report_builds_pages():
    """Every page is report/'s (report/pages/, written by report/publish.py): no HTML anywhere else."""
    import re

    tag = re.compile(r"<(html|body|h[1-6]|table|img|pre|p)[ >]")
    elsewhere = [p for p in [*(ROOT / "moe2sim").rglob("*.py"), *(ROOT / "hardware").rglob("*.py")]
                 if (ROOT / "moe2sim" / "report") not in p.parents and tag.search(p.read_text())]
    assert not elsewhere, f"HTML built outside moe2sim/report/: {elsewhere}"


def test_every_bundled_data_file_ships_in_the_wheel():
    """Every file under traces/ (but the build scripts) matches a package-data pattern, so a wheel user's run
    finds it (a leakage table once shipped in the repository only and broke the installed package)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = patterns["moe2sim.bundled.traces"]
    data = [p.relative_to(ROOT / "traces") for p in (ROOT / "traces").rglob("*")
            if p.is_file() and "build" not in p.parts and "__pycache__" not in p.parts and p.suffix != ".py"]
    missing = [str(p) for p in data if not any(p.match(pattern) and len(p.parts) == len(Path(pattern).parts)
                                               for pattern in shipped)]
    assert not missing, f"bundled data a wheel would leave out: {missing}"
