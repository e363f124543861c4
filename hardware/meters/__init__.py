"""Energy meters with begin/end windows, one backend per vendor (as Zeus does): NVIDIA GPUs via NVML
(nvml.py), Jetson boards via their INA3221 rails (jetson.py), Intel/AMD CPUs via RAPL (rapl.py). A
device without a supported meter raises MeterUnavailable: energy is never reported as zero for want
of a meter. What they share (sampling, interpolated windows, their error bound): base.py.
"""
from __future__ import annotations

from typing import Callable

from moe2sim.hardware.meters.base import EnergyMeter, Measurement, MeterUnavailable, SampledCounter, integrated_power
from moe2sim.hardware.meters.jetson import JETSON_RAILS, TOTAL_INPUT_RAILS, jetson_meter
from moe2sim.hardware.meters.nvml import nvml_meter
from moe2sim.hardware.meters.rapl import rapl_meter

METERS: dict[str, Callable[[], SampledCounter]] = {"nvml": nvml_meter, "jetson": jetson_meter, "rapl": rapl_meter}


def open_meter(kind: str = "auto") -> SampledCounter:
    """A meter by name, or the first that works ('auto'); MeterUnavailable lists why each failed."""
    if kind != "auto":
        if kind not in METERS:
            raise MeterUnavailable(f"unknown meter '{kind}' (known: {', '.join(METERS)})")
        return METERS[kind]()
    reasons = []
    for name, make in METERS.items():
        try:
            return make()
        except MeterUnavailable as exc:
            reasons.append(str(exc))
    raise MeterUnavailable("no energy meter on this machine: " + "; ".join(reasons))


__all__ = ["EnergyMeter", "JETSON_RAILS", "METERS", "Measurement", "MeterUnavailable", "SampledCounter",
           "TOTAL_INPUT_RAILS", "integrated_power", "jetson_meter", "nvml_meter", "open_meter", "rapl_meter"]
