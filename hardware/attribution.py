"""Energy of concurrent requests on one device: each interval's energy is shared equally by the
requests running in it.

Between consecutive start/end instants τ_k the set of running requests is fixed (n_k of them). A
request r running over [t0, t1] is attributed

    E_r = Σ_k (E(τ_{k+1}) − E(τ_k)) / n_k      over the intervals [τ_k, τ_{k+1}] inside [t0, t1],

where E is the meter's interpolated cumulative energy (meters.py). The requests' energies add up to
the device's energy while any request runs: nothing is counted twice, and idle gaps go to no
request. With one request at a time, E_r is the meter's own window E(t1) − E(t0). The request's share
of the device's time, T_r = Σ_k (τ_{k+1} − τ_k) / n_k, is what its share of idle power costs: its
active energy is E_r − P_idle · T_r (at n = 1, T_r is the window's length).

Error: each interpolated reading is off by at most ΔP·T_update / 2 and enters E_r with a weight of
at most 1, so |error| ≤ ΔP·T_update·(2 + m) / 2 for m start/end instants of other requests inside
r's window. That is the meter's window bound when m = 0.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from moe2sim.hardware.meters import Measurement, SampledCounter


@dataclass(frozen=True)
class Share(Measurement):
    """A request's share of the device's energy (energy_J) and of its time over the request's window."""

    time_s: float  # Σ (interval length / requests running in it): idle power × time_s is its share of idle energy


@dataclass(eq=False)
class Span:
    """One request's time on the device; `end` is None while it runs, `pending` until its energy is read."""

    start: float
    end: float | None = None
    pending: bool = True

    def overlaps(self, other: "Span") -> bool:
        return (other.end is None or other.end > self.start) and (self.end is None or self.end > other.start)


class EnergyShares:
    """Begin/stop the requests a device serves, then read each one's share of the device's energy."""

    def __init__(self, meter: SampledCounter):
        self.meter = meter
        self.lock = threading.Lock()
        self.spans: list[Span] = []

    def begin(self) -> Span:
        with self.lock:
            span = Span(self.meter.now())
            self.spans.append(span)
        return span

    def stop(self, span: Span, read: bool = True) -> None:
        """The request left the device: it no longer takes a share. `read=False` (a failed request):
        its energy will not be asked for; its shares still count for the others."""
        with self.lock:
            span.end = self.meter.now()
            span.pending = read

    def energy(self, span: Span) -> Share:
        """The stopped request's share of the device's energy and time over its span (module docstring)."""
        if span.end is None:
            raise ValueError("energy() of a request that is still running; stop() it first")
        t0, t1 = span.start, span.end
        with self.lock:
            others = [s for s in self.spans if s is not span and s.overlaps(span)]
            span.pending = False
            cuts = sorted({t0, t1, *(t for s in others for t in (s.start, s.end) if t is not None and t0 < t < t1)})
            intervals = list(zip(cuts, cuts[1:]))
            sharing = [1 + sum(s.start <= a and (s.end is None or s.end >= b) for s in others) for a, b in intervals]
            self._forget_finished()
        whole = self.meter.measure(t0, t1)  # waits until the reading has moved past t1
        energy = sum(self.meter.measure(a, b).energy_J / n for (a, b), n in zip(intervals, sharing))
        inside = len(cuts) - 2  # start/end instants of other requests within the window
        return Share(energy, whole.duration_s, whole.resolution_J * (2 + inside) / 2, whole.update_s, whole.method,
                     time_s=sum((b - a) / n for (a, b), n in zip(intervals, sharing)))

    def _forget_finished(self) -> None:
        """Drop read spans that no span still to be read overlaps (spans yet to begin start later)."""
        waiting = [s for s in self.spans if s.pending]
        self.spans = [s for s in self.spans if s.pending or any(s.overlaps(w) for w in waiting)]
