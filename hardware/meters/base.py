"""What every energy meter shares: a cumulative-energy reading polled in a thread (SampledCounter),
windows answered by interpolation, and integration of a power reading into energy. The vendor
backends (nvml.py, jetson.py, rapl.py) only say how to read their counter.

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

import threading
import time
from dataclasses import dataclass
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
