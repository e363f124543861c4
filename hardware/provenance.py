"""Where a measurement was taken: the machine, the device, its driver, the software stack and the
meter, written beside every collected trace (`<trace>.device.json`) so that a shipped trace can say
how it was measured. Only what the machine reports is recorded; nothing is filled in.
"""
from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from moe2sim.hardware.meters import SampledCounter

STACK = ("moe2sim", "torch", "transformers", "nvidia-ml-py")


def _versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for package in STACK:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def _nvidia(index: int) -> dict[str, Any]:
    """What NVML says of GPU `index` (empty without NVML)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return {"gpu": pynvml.nvmlDeviceGetName(handle), "driver": pynvml.nvmlSystemGetDriverVersion(),
                "power_limit_W": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000}
    except Exception:  # no package, no driver, no such GPU: record nothing rather than guess
        return {}


def _jetson() -> dict[str, Any]:
    """The Jetson module and its Jetson Linux release (empty elsewhere)."""
    facts = {}
    for key, path in (("jetson_model", "/proc/device-tree/model"), ("l4t_release", "/etc/nv_tegra_release")):
        try:
            facts[key] = Path(path).read_text().strip("\x00 \n").splitlines()[0]
        except (OSError, IndexError):
            continue
    return facts


def describe(backend_name: str, device: str, meter: SampledCounter | None) -> dict[str, Any]:
    """The provenance record of a collection run."""
    record: dict[str, Any] = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "system": platform.platform(), "processor": platform.processor()},
        "backend": backend_name, "torch_device": device, "stack": _versions(),
        "meter": {"name": meter.name, "update_s": meter.update_s(), "max_power_W": meter.max_power_W}
        if meter else {"name": "none", "note": "energy not measured (NaN in the trace)"},
    }
    if device.startswith("cuda"):
        record |= _nvidia(int(device.partition(":")[2] or 0))
    return record | _jetson()
