"""The site's schedule over time (scenario `site:`): outages and degradations of experts, latency
targets by time of day, and an energy price by time of day.

Model:
    down expert n over [start_s, end_s): a leg that reaches n, or that n would start, in that period
        waits until end_s (work already in service finishes);
    degraded expert n over [start_s, end_s): a leg routed in that period takes slowdown x its service
        time and uses slowdown x power_factor x its active energy;
    latency target at time t: latency_budget_s x the value of the daily period holding t (1 outside);
    energy price at time t: the value of the daily period holding t per kJ of active energy (0 outside);
    published ahead (site.publish): the price at t + 1 h, ..., t + AHEAD_H h, and per expert the hours
    until its next announced outage (0 inside one, AHEAD_H if none within AHEAD_H hours).

A randomized site (scenario `site.random`, a SiteDistribution) draws each episode's outages, energy
price period and demand level (draw_site, episode_scenario); the fixed schedule is then one draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from moe2sim.scenario import DailyValue, Outage, Scenario, Site, SiteDistribution

DAY_S = 86_400.0
AHEAD_H = 6  # how far ahead what the site publishes is observed, hours


@dataclass(frozen=True)
class DailyProfile:
    """A piecewise-constant value over the day: `values[i]` from `starts[i]` (s of the day) on."""

    starts: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, periods, default: float) -> "DailyProfile":
        edges = sorted({0.0, DAY_S, *(p.start_h * 3600 for p in periods), *(p.end_h * 3600 for p in periods)})
        starts = np.array(edges[:-1])
        values = np.full(len(starts), default)
        for p in periods:
            values[(starts >= p.start_h * 3600) & (starts < p.end_h * 3600)] = p.value
        return cls(starts, values)

    def at(self, t_s):
        """The value at time(s) t (seconds since the run's start, which is midnight)."""
        return self.values[np.searchsorted(self.starts, np.mod(t_s, DAY_S), side="right") - 1]


@dataclass(frozen=True)
class SiteSchedule:
    """The site's state as a function of time (see the module docstring)."""

    names: tuple[str, ...]
    down: tuple[tuple[tuple[float, float], ...], ...]              # per expert: down periods
    degraded: tuple[tuple[tuple[float, float, float, float], ...], ...]  # per expert: start, end, slowdown, power
    latency_target: DailyProfile
    energy_price: DailyProfile
    announced: tuple[tuple[tuple[float, float], ...], ...] = ()  # per expert: announced outages (start, end)
    publish: tuple[str, ...] = ()

    @classmethod
    def of(cls, scenario: Scenario) -> "SiteSchedule":
        site = scenario.site or Site()
        names = tuple(e.name for e in scenario.experts)
        down = tuple(tuple((o.start_s, o.end_s) for o in site.outages if o.expert == n and o.down) for n in names)
        degraded = tuple(tuple((o.start_s, o.end_s, o.slowdown, o.power_factor) for o in site.outages
                               if o.expert == n and not o.down) for n in names)
        announced = tuple(tuple((o.start_s, o.end_s) for o in site.outages if o.expert == n and o.announced)
                          for n in names)
        return cls(names, down, degraded, DailyProfile.of(site.latency_targets, 1.0),
                   DailyProfile.of(site.energy_price, 0.0), announced, tuple(site.publish))

    def price_ahead(self, t: float) -> np.ndarray:
        """(AHEAD_H,) the published energy price 1, 2, ... AHEAD_H hours after t."""
        return self.energy_price.at(t + 3600.0 * np.arange(1, AHEAD_H + 1))

    def maintenance_in_h(self, t: float) -> np.ndarray:
        """(N,) hours from t until each expert's next announced outage (0 inside one), at most AHEAD_H."""
        out = np.full(len(self.names), float(AHEAD_H))
        for n, periods in enumerate(self.announced):
            for start, end in periods:
                if end > t:
                    out[n] = min(out[n], max(0.0, start - t) / 3600.0)
        return out

    @property
    def static(self) -> bool:
        return not any(self.down) and not any(self.degraded)

    def up_at(self, n: int, t: float) -> float:
        """When expert n can next work, from time t (t itself unless it is down then)."""
        for start, end in self.down[n]:
            if start <= t < end:
                return end
        return t

    def speed(self, t: float) -> np.ndarray:
        """(N,) 1 / slowdown of each expert at time t, 0 while it is down."""
        out = np.ones(len(self.names))
        for n in range(len(self.names)):
            if self.up_at(n, t) > t:
                out[n] = 0.0
                continue
            for start, end, slowdown, _ in self.degraded[n]:
                if start <= t < end:
                    out[n] = 1.0 / slowdown
        return out

    def exclusions(self) -> list[int]:
        """Bitmasks of the experts down, and of those down or degraded, at each time that changes them."""
        events = sorted({t for periods in (*self.down, *self.degraded) for p in periods for t in p[:2]})
        masks = []
        for t in events:
            down = sum(1 << n for n in range(len(self.names)) if self.up_at(n, t) > t)
            slow = sum(1 << n for n, periods in enumerate(self.degraded) if any(p[0] <= t < p[1] for p in periods))
            masks += [m for m in (down, down | slow) if m]
        return list(dict.fromkeys(masks))

    def scales(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(len(t), N) service-time and active-energy multipliers of legs of queries arriving at times t."""
        time_x, energy_x = np.ones((len(t), len(self.names))), np.ones((len(t), len(self.names)))
        for n, periods in enumerate(self.degraded):
            for start, end, slowdown, power in periods:
                inside = (t >= start) & (t < end)
                time_x[inside, n], energy_x[inside, n] = slowdown, slowdown * power
        return time_x, energy_x


def draw_site(site: Site, duration_s: float, rng: np.random.Generator) -> tuple[Site, float]:
    """One episode's site drawn from site.random (see SiteDistribution): the fixed site with the drawn
    outages and energy price period, and the demand scale. Every draw comes from `rng`, in a fixed order."""
    dist = site.random
    outages = []
    for spec in dist.outages:
        for expert in spec.experts:
            fails, start_h, hours, down, slowdown = (rng.random(), rng.uniform(*spec.start_h),
                                                     rng.uniform(*spec.duration_h), rng.random(),
                                                     rng.uniform(*spec.slowdown))
            announced = rng.random() if spec.announced_share > 0 else 1.0  # no draw where none is announced
            start, end = start_h * 3600, min((start_h + hours) * 3600, duration_s)
            kind = {"down": True} if down < spec.down_share else {"slowdown": slowdown, "power_factor": spec.power_factor}
            if fails >= spec.probability or not start < end or kind == {"slowdown": 1.0, "power_factor": 1.0}:
                continue
            outages.append(Outage(expert=expert, start_s=start, end_s=end, announced=announced < spec.announced_share,
                                  **kind))
    price = []
    if dist.energy_price is not None:
        p = dist.energy_price
        on, start_h, hours, value = rng.random(), rng.uniform(*p.start_h), rng.uniform(*p.duration_h), rng.uniform(*p.value)
        end_h = min(start_h + hours, 24.0)
        if on < p.probability and start_h < end_h:
            price.append(DailyValue(start_h=start_h, end_h=end_h, value=value))
    scale = float(rng.uniform(*dist.demand_scale))
    return site.model_copy(update={"outages": outages, "energy_price": price, "random": None}), scale


def possible_exclusions(dist: SiteDistribution, names: tuple[str, ...]) -> list[int]:
    """Bitmasks of every set of experts a draw can take out at once (for the action table: the same for
    every episode)."""
    index = {n: i for i, n in enumerate(names)}
    candidates = sorted({index[n] for spec in dist.outages for n in spec.experts})
    return [sum(1 << i for i in group) for k in range(1, len(candidates) + 1) for group in combinations(candidates, k)]


def episode_scenario(scenario: Scenario, rng: np.random.Generator) -> Scenario:
    """The scenario of one episode of a randomized site: its site drawn (draw_site), the arrival rate scaled
    by the drawn demand level. A scenario without site.random is returned as is, with no draw."""
    if scenario.site is None or scenario.site.random is None:
        return scenario
    site, scale = draw_site(scenario.site, scenario.duration_s or DAY_S, rng)
    arrivals = scenario.arrivals
    field = {"poisson": "rate_per_s", "diurnal": "mean_rate_per_s"}.get(getattr(arrivals, "process", ""))
    if field is not None and scale != 1.0:
        arrivals = arrivals.model_copy(update={field: getattr(arrivals, field) * scale})
    return scenario.model_copy(update={"site": site, "arrivals": arrivals})
