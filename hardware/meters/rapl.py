"""Intel/AMD CPU packages through Linux powercap (RAPL): a µJ counter with wrap-around."""
from __future__ import annotations

from pathlib import Path

from moe2sim.hardware.meters.base import MeterUnavailable, SampledCounter


def rapl_meter(zone: str = "/sys/class/powercap/intel-rapl:0") -> SampledCounter:
    """CPU package energy via Linux powercap (RAPL), µJ counter with wrap-around."""
    path = Path(zone) / "energy_uj"
    if not path.exists():
        raise MeterUnavailable(f"RAPL: {path} not found")
    wrap = int((Path(zone) / "max_energy_range_uj").read_text())
    state = {"last": int(path.read_text()), "total": 0}

    def joules() -> float:
        value = int(path.read_text())
        state["total"] += (value - state["last"]) % wrap
        state["last"] = value
        return state["total"] / 1e6

    return SampledCounter(joules, f"rapl:{Path(zone).name}", 400.0)
