"""Jetson boards: the INA3221 power rails in sysfs, integrated into energy."""
from __future__ import annotations

import glob
from pathlib import Path

from moe2sim.hardware.meters.base import MeterUnavailable, SampledCounter, integrated_power

JETSON_RAILS = "/sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*"


TOTAL_INPUT_RAILS = {"VDD_IN", "POM_5V_IN", "5V_IN"}  # a module's whole input; the other rails branch from it


def jetson_meter(rails_glob: str = JETSON_RAILS) -> SampledCounter:
    """Jetson: V × I of the INA3221 rails (in*_input mV, curr*_input mA, in*_label).

    Where the module has a total-input rail (Orin NX/Nano: VDD_IN, beside VDD_CPU_GPU_CV and VDD_SOC,
    which it supplies) only that rail is read: summing would count its branches twice. Otherwise (AGX
    Orin: VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, VDDQ_VDD2_1V8AO) the rails are summed; they cover the
    module, not the carrier board. Channels labelled NC (not connected) are skipped.
    """
    rails: dict[str, tuple[Path, Path]] = {}
    for hwmon in sorted(glob.glob(rails_glob)):
        for volt in sorted(Path(hwmon).glob("in[0-9]_input")):
            curr = volt.with_name(volt.name.replace("in", "curr", 1))
            label_file = volt.with_name(volt.name.replace("_input", "_label"))
            label = label_file.read_text().strip() if label_file.exists() else f"{Path(hwmon).name}/{volt.stem}"
            if curr.exists() and label != "NC":
                rails[label] = (volt, curr)
    if not rails:
        raise MeterUnavailable(f"Jetson: no INA3221 rails under {rails_glob}")
    total = sorted(TOTAL_INPUT_RAILS & set(rails))
    read = {name: rails[name] for name in total} if total else rails

    def watts() -> float:
        return sum(int(v.read_text()) * int(c.read_text()) for v, c in read.values()) / 1e6

    return integrated_power(watts, f"jetson-ina3221:{'+'.join(read)}", 75.0)
