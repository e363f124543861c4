"""NVIDIA GPUs through NVML: the total-energy counter (mJ) where the GPU has it, else integrated power (mW)."""
from __future__ import annotations

from moe2sim.hardware.meters.base import MeterUnavailable, SampledCounter, integrated_power


def nvml_meter(index: int = 0) -> SampledCounter:
    """NVIDIA GPU: NVML total-energy counter (mJ) if the GPU has it, else integrated power (mW)."""
    try:
        import pynvml
    except ImportError:
        raise MeterUnavailable("NVML: the nvidia-ml-py package is not installed (pip install -e '.[hardware]')") from None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        limit_W = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
    except pynvml.NVMLError as exc:
        raise MeterUnavailable(f"NVML: {exc}") from None
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return SampledCounter(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000,
                              f"nvml-energy-counter:{name}", limit_W)
    except pynvml.NVMLError:
        return integrated_power(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000,
                                f"nvml-power-integrated:{name}", limit_W)
