"""Energy meters with begin/end windows: NVIDIA GPUs via NVML, Jetson boards via their INA3221
power rails in sysfs, Intel/AMD CPUs via powercap (RAPL). A device without a supported meter
raises MeterUnavailable: energy is never reported as zero for want of a meter.

Attribution with a coarse counter. NVML's total-energy counter (and its power reading) update
only every ~100 ms on the H200 (shared/data/h200), so end − begin of a 20 ms prefill reads 0 J or
a whole step. Every meter here therefore keeps a background sampler that records (time,
cumulative energy) whenever the reading changes, and answers a window [t0, t1] by linear
interpolation of that cumulative curve between the update instants around t0 and t1. The energy
of a window is then exact up to the power variation inside the two partial update intervals at its
ends: |error| ≤ ΔP × T_update (e.g. ≤ 100 W × 0.1 s = 10 J on the H200 for any window length,
~0.5 % of an 8B model's 2 kJ request, but large for a 20 ms prefill alone). `Measurement.resolution_J`
states that bound for each window. A window is only answered once the sampler has seen an update
after t1 (end() waits up to two update periods for it).
"""
from __future__ import annotations

import glob
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol


class MeterUnavailable(RuntimeError):
    """No supported energy counter on this machine (or the one asked for is missing)."""


@dataclass(frozen=True)
class Measurement:
    energy_J: float
    duration_s: float
    resolution_J: float   # bound on |error| of energy_J (see module docstring)
    update_s: float       # how often the underlying reading changes
    method: str


class EnergyMeter(Protocol):
    name: str

    def now(self) -> float: ...

    def measure(self, t0: float, t1: float) -> Measurement: ...

    def close(self) -> None: ...


class SampledCounter:
    """A cumulative-energy reading polled in a thread; windows answered by interpolation."""

    def __init__(self, read_joules: Callable[[], float], name: str, max_power_W: float, poll_s: float = 0.005):
        self.read, self.name, self.max_power_W, self.poll_s = read_joules, name, max_power_W, poll_s
        first = read_joules()
        self.points: list[tuple[float, float]] = [(time.perf_counter(), first)]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        last = self.points[-1][1]
        while not self.stop.wait(self.poll_s):
            value = self.read()
            if value != last:
                with self.lock:
                    self.points.append((time.perf_counter(), value))
                last = value

    def now(self) -> float:
        return time.perf_counter()

    def update_s(self) -> float:
        with self.lock:
            ts = [t for t, _ in self.points[-50:]]
        gaps = sorted(b - a for a, b in zip(ts, ts[1:]))
        return gaps[len(gaps) // 2] if gaps else 0.1

    def _at(self, t: float) -> float:
        pts = self.points
        for (ta, ea), (tb, eb) in zip(reversed(pts[:-1]), reversed(pts[1:])):
            if ta <= t <= tb:
                return ea + (eb - ea) * (t - ta) / (tb - ta)
        raise MeterUnavailable(f"{self.name}: no readings around t={t:.3f} (window too old or too new)")

    def measure(self, t0: float, t1: float) -> Measurement:
        deadline = time.perf_counter() + 2 * max(self.update_s(), 0.05) + 0.5
        while self.points[-1][0] < t1:
            if time.perf_counter() > deadline:
                raise MeterUnavailable(f"{self.name}: the energy reading stopped updating")
            time.sleep(self.poll_s)
        with self.lock:
            energy = self._at(t1) - self._at(t0)
        update = self.update_s()
        return Measurement(energy, t1 - t0, self.max_power_W * update, update, self.name)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=1)


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


def integrated_power(read_watts: Callable[[], float], name: str, max_power_W: float) -> SampledCounter:
    """Turn a power reading into a cumulative-energy reading by trapezoidal integration."""
    state = {"t": time.perf_counter(), "p": read_watts(), "e": 0.0}
    lock = threading.Lock()

    def energy() -> float:
        with lock:
            t, p = time.perf_counter(), read_watts()
            state["e"] += (p + state["p"]) / 2 * (t - state["t"])
            state["t"], state["p"] = t, p
            return state["e"]

    return SampledCounter(energy, name, max_power_W)


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
