"""The scenario schema (pydantic): experts, categories, budgets, arrivals, policy, sweep, env.

Every model forbids unknown keys, so a typo is an error, never a silently ignored setting.
Relative paths are resolved against the scenario file's directory (`data_dir` first, then the
trace and profile paths against `data_dir`); without `data_dir` the bundled data is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from moe2sim.data.bundled import bundled_path

MAX_VALUE = 1e12  # any scenario number: far beyond any sensible setting, far from overflow in products
PositiveFloat = Annotated[float, Field(gt=0, le=MAX_VALUE)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=MAX_VALUE)]


def _plain_name(name: str) -> str:
    """A scenario name is a folder name (runs/<name>): no path separators, NUL, '.' or '..'."""
    if any(c in name for c in "/\\\0") or name in (".", ".."):
        raise ValueError("must be a plain folder name (no '/', '\\', NUL, '.' or '..'): it names the default "
                         "output folder runs/<name>")
    return name


def _no_nul(path: str) -> str:
    if "\0" in path:
        raise ValueError("a path cannot contain a NUL character")
    return path


Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_plain_name)]
PathText = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_no_nul)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
Tokens = Annotated[int, Field(ge=1, le=1_000_000)]
MAX_QUERIES = 20_000_000      # a run's expected arrivals; beyond it a run would not finish in reasonable time/memory
MAX_DURATION_S = 366 * 86_400.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Rate = Annotated[float, Field(ge=1e-3, le=1e9, description="Mbit/s: from 1 kbit/s (slower overflows times)")]


class Link(Strict):
    """A user<->edge-server link as a pure delay: bytes / rate + one-way propagation."""

    uplink_Mbps: Rate = 100.0
    downlink_Mbps: Rate = 100.0
    propagation_s: Annotated[float, Field(ge=0, le=1e6)] = 0.002


class TraceService(Strict):
    """Replay per-query device-trace rows (traces/README.md, device trace schema)."""

    file: PathText
    model: str | None = Field(None, description="rows whose `model` column equals this; all rows if unset")


class Expert(Strict):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="expert id in the quality trace")
    profile: PathText = Field(description="device profile: name in data_dir/profiles or a YAML path")
    slots: Annotated[int, Field(ge=1, le=100_000)] = 1
    link: Link = Link()
    service: Literal["profile"] | TraceService = "profile"
    device: str | None = Field(None, min_length=1, description=(
        "the device it runs on: experts naming the same device share it (its profile's batching law); "
        "unset: a device of its own"))
    service_noise: bool | None = Field(None, description="draw the profile's spread as noise; unset: the scenario's")
    idle_power_W: Annotated[float, Field(ge=0, le=1e7)] | None = Field(None, description=(
        "a freshly measured idle power of its device (W), in place of the profile's: idle drifts from day to day "
        "(the H200's rose from 121 to 129 W), and every active energy is measured above it"))
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description=(
        "the environment variable that holds the bearer key of this expert's endpoint (hardware live; a server "
        "started with serve --api-key, vLLM --api-key or a paid API): the key itself is never in a scenario, "
        "record, log or report"))


class FixedTokens(Strict):
    dist: Literal["fixed"] = "fixed"
    mean: Tokens


class LognormalTokens(Strict):
    """Token count ~ round(lognormal) with the given mean and coefficient of variation."""

    dist: Literal["lognormal"]
    mean: Annotated[float, Field(gt=0, le=1_000_000)]
    cv: Annotated[float, Field(gt=0, le=100)]
    max: Tokens = 4096


class GeometricTokens(Strict):
    """Token count ~ geometric on {1, 2, ...} with the given mean (memoryless lengths: M/M/c-like service)."""

    dist: Literal["geometric"]
    mean: Annotated[float, Field(ge=1, le=1_000_000)]


TokenLengths = Annotated[Union[FixedTokens, LognormalTokens, GeometricTokens], Field(discriminator="dist")]


class Category(Strict):
    name: str = Field(min_length=1)
    task: str | None = Field(None, description="task in the prompt trace; defaults to the name")
    mix: PositiveFloat = Field(description="relative share of arrivals")
    latency_budget_s: PositiveFloat
    answer_options: Annotated[int, Field(ge=2)] | None = Field(
        None, description="choices of a multiple-choice task; unset: free-form answers (wrong ones never agree)")
    prompt_tokens: Literal["trace"] | TokenLengths = "trace"
    output_tokens: TokenLengths

    @property
    def trace_task(self) -> str:
        return self.task or self.name


class Poisson(Strict):
    process: Literal["poisson"]
    rate_per_s: Annotated[float, Field(gt=0, le=1e6)]

    def peak_rate_per_s(self) -> float:
        return self.rate_per_s

    def expected_rate_per_s(self) -> float:
        return self.rate_per_s


class Bursts(Strict):
    """Bursts on top of the diurnal rate: a two-state Markov-modulated Poisson process whose rate is
    multiplied by `factor` during bursts; burst and gap durations are exponential."""

    factor: Annotated[float, Field(gt=1, le=1000)] = 3.0
    mean_duration_s: PositiveFloat = 600.0
    mean_gap_s: PositiveFloat = 7200.0


class Diurnal(Strict):
    """Non-homogeneous Poisson: rate(t) = mean_rate * (1 + amplitude * sin(2π (t - phase_s) / period_s)),
    times the burst factor while a burst is on (if `bursts` is set)."""

    process: Literal["diurnal"]
    mean_rate_per_s: Annotated[float, Field(gt=0, le=1e6)]
    amplitude: Annotated[float, Field(ge=0, lt=1)] = 0.5
    period_s: PositiveFloat = 86_400.0
    phase_s: Annotated[float, Field(ge=-MAX_VALUE, le=MAX_VALUE)] = 0.0
    bursts: Bursts | None = None

    def peak_rate_per_s(self) -> float:
        return self.mean_rate_per_s * (1 + self.amplitude) * (self.bursts.factor if self.bursts else 1.0)

    def expected_rate_per_s(self) -> float:
        """Over whole periods: the sine averages out; a burst is on a d / (d + g) share of the time."""
        b = self.bursts
        return self.mean_rate_per_s * (1 + (b.factor - 1) * b.mean_duration_s / (b.mean_duration_s + b.mean_gap_s)
                                       if b else 1.0)


class Replay(Strict):
    """Arrivals from a file: CSV/Parquet with columns time_s[, category][, prompt_tokens, output_tokens], or a
    production trace in a known format (workload.generator.REPLAY_FORMATS). A request without a category
    column gets `category`, else one drawn by the mix; with token columns, its own prompt and output length."""

    process: Literal["replay"]
    file: PathText
    time_scale: PositiveFloat = 1.0
    format: Literal["moe2sim", "azure_llm_2023"] = "moe2sim"
    category: str | None = Field(None, description="the scenario category of every request of a file without a "
                                                   "category column (default: drawn by the mix)")

    def peak_rate_per_s(self) -> None:
        return None  # the file's length bounds the run

    def expected_rate_per_s(self) -> None:
        return None


Arrivals = Annotated[Union[Poisson, Diurnal, Replay], Field(discriminator="process")]


SelectionMethod = Literal["none", "significant", "significant_exhaustive", "near_best", "near_best_exhaustive",
                          "monotone", "exact", "exhaustive", "best_single", "greedy_energy", "random", "all_fit"]
# A sweep's methods: MoE² (the gate under the scenario's selection method, `exact` where it has none),
# the selection baselines, and the uniform vote over MoE²'s subset (no gate).
SweepMethod = Literal["moe2", "best_single", "greedy_energy", "random", "all_fit", "uniform_vote"]


class SelectionConfig(Strict):
    """The coarse level: which subset S the policy may use, re-solved whenever the budgets change.

    significant (MoE²'s default in sweeps and `select`): the optimum of U(S), but a mixture only where it
    beats the best single expert by z paired standard errors; near_best: the cheapest such subset not
    significantly worse than the optimum; monotone: MoE²'s discrete monotonic optimisation (exact when U
    is monotone); exact: the same search with a bound valid for any U (the paper's rule on the point
    estimate); exhaustive, *_exhaustive: the references; the rest are baselines
    (moe2sim/selection/solvers.py); none: the whole `subset` (or all experts), budgets ignored.
    """

    method: SelectionMethod = "none"
    quantile: Annotated[float, Field(gt=0, le=1)] = Field(
        0.95, description="prompt/output length quantile that defines an expert's worst case")
    seed: Seed = Field(0, description="seed of the random baseline")
    z: NonNegativeFloat = Field(1.96, description="significant, near_best: a difference in U(S) counts only beyond "
                                                  "z paired standard errors")


class PolicyConfig(Strict):
    """gate: the trained gating network (checkpoint under data_dir); prior_accuracy: per category the
    experts with the best train accuracy; fixed_subset: the subset in its listed order; uniform: k
    experts of the subset drawn uniformly per query, equal weights (the no-gate baseline)."""

    name: Literal["gate", "prior_accuracy", "fixed_subset", "uniform"] = "gate"
    gate: PathText = "gate.pt"
    cross_fit: PathText | None = Field(
        "gate_crossfit.npz", description="cross-fitted gate logits of the train split (`moe2sim train-gate "
        "--cross-fit`) that U(S) is estimated from; null: the gate itself on the validation part of the train split")
    task_label: bool = Field(False, description="give the gate each prompt's task label (label-aware); default: "
                                                "route from the prompt alone")
    k: Annotated[int, Field(ge=1)] = 2
    subset: list[str] | None = Field(None, description="allowed experts (names); all if unset")
    aggregation: Literal["weighted_vote", "highest_weight", "oracle"] = "weighted_vote"
    aggregation_s: NonNegativeFloat = 0.005
    vote_seed: Seed = Field(0, description="seed of the assumed wrong answers in weighted_vote")
    selection: SelectionConfig = SelectionConfig()


class SweepConfig(Strict):
    """Budget sweeps drawn into the report: one axis varied at a time, the other at the scenario's values."""

    energy_budget_J: list[PositiveFloat] = Field(default_factory=list)
    latency_scale: list[PositiveFloat] = Field(default_factory=list, description="x each category's latency budget")
    methods: list[SweepMethod] = Field(default_factory=lambda: list(get_args(SweepMethod)), min_length=1)
    simulate: bool = True

    @model_validator(mode="after")
    def _points(self) -> "SweepConfig":
        if not self.energy_budget_J and not self.latency_scale:
            raise ValueError("a sweep needs at least one energy_budget_J or latency_scale value (or no sweep block)")
        return self


class RewardWeights(Strict):
    """reward per window = quality·(correct answers) − latency_violation·(answers past their budget)
    − energy_overshoot_per_kJ·(kJ of active energy spent beyond the episode allowance in the window)."""

    quality: NonNegativeFloat = 1.0
    latency_violation: NonNegativeFloat = 1.0
    energy_overshoot_per_kJ: NonNegativeFloat = 1.0


Hour = Annotated[float, Field(ge=0, le=24)]


class Outage(Strict):
    """An expert down (`down: true`: legs that reach it wait until `end_s`) or degraded (`slowdown` x its
    service time, `power_factor` x its power, e.g. a lower power mode) from start_s to end_s of the run."""

    expert: str = Field(min_length=1)
    start_s: NonNegativeFloat
    end_s: PositiveFloat
    down: bool = False
    slowdown: Annotated[float, Field(ge=1, le=1000)] = 1.0
    power_factor: Annotated[float, Field(gt=0, le=10)] = 1.0
    announced: bool = Field(False, description="a maintenance window the site publishes ahead (site.publish)")

    @model_validator(mode="after")
    def _span(self) -> "Outage":
        if not self.start_s < self.end_s:
            raise ValueError(f"outage of {self.expert}: start_s must be below end_s")
        if not self.down and self.slowdown == 1.0 and self.power_factor == 1.0:
            raise ValueError(f"outage of {self.expert}: set down: true, a slowdown > 1 or a power_factor")
        return self


class DailyValue(Strict):
    """A value in force from start_h to end_h (hours of the day, 0-24; every day)."""

    start_h: Hour
    end_h: Hour
    value: NonNegativeFloat

    @model_validator(mode="after")
    def _span(self) -> "DailyValue":
        if not self.start_h < self.end_h:
            raise ValueError("start_h must be below end_h")
        return self


def _disjoint(name: str, spans: list[tuple[float, float]]) -> None:
    spans = sorted(spans)
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ValueError(f"{name}: periods [{a0}, {a1}) and [{b0}, {b1}) overlap")


Span = tuple[NonNegativeFloat, NonNegativeFloat]


def _ordered(span: Span, name: str) -> None:
    if span[0] > span[1]:
        raise ValueError(f"{name}: the lower end must not exceed the upper end")


class RandomOutage(Strict):
    """Each episode, each of `experts` fails with `probability`, independently: from a start uniform in
    start_h, for a duration uniform in duration_h (hours; cut at the episode's end); down with probability
    down_share, else degraded by a slowdown uniform in `slowdown` (x power_factor of its power)."""

    experts: list[str] = Field(min_length=1)
    probability: Annotated[float, Field(ge=0, le=1)] = 0.5
    start_h: Span = (0.0, 24.0)
    duration_h: Span = (1.0, 8.0)
    down_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    slowdown: tuple[Annotated[float, Field(ge=1, le=1000)], Annotated[float, Field(ge=1, le=1000)]] = (2.0, 4.0)
    power_factor: Annotated[float, Field(gt=0, le=10)] = 1.0
    announced_share: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="share of the failures that are announced maintenance windows")

    @model_validator(mode="after")
    def _spans(self) -> "RandomOutage":
        for name in ("start_h", "duration_h", "slowdown"):
            _ordered(getattr(self, name), f"site.random.outages.{name}")
        if self.duration_h[0] <= 0 and self.duration_h[1] <= 0:
            raise ValueError("site.random.outages.duration_h: durations must reach above 0")
        return self


class RandomPrice(Strict):
    """Each episode, with `probability`, one period of energy price: a start uniform in start_h, a duration
    uniform in duration_h (hours, cut at midnight), a price per kJ uniform in `value`."""

    probability: Annotated[float, Field(ge=0, le=1)] = 1.0
    start_h: Span = (0.0, 24.0)
    duration_h: Span = (2.0, 8.0)
    value: Span = (0.0, 1.0)

    @model_validator(mode="after")
    def _spans(self) -> "RandomPrice":
        for name in ("start_h", "duration_h", "value"):
            _ordered(getattr(self, name), f"site.random.energy_price.{name}")
        return self


class SiteDistribution(Strict):
    """The distribution a randomized env draws each episode's site from (moe2sim/sim/site.py draw_site):
    outages, an energy price period, and a demand level (x the arrival process's rate, uniform in
    demand_scale)."""

    outages: list[RandomOutage] = Field(default_factory=list)
    energy_price: RandomPrice | None = None
    demand_scale: tuple[PositiveFloat, PositiveFloat] = (1.0, 1.0)

    @model_validator(mode="after")
    def _spans(self) -> "SiteDistribution":
        _ordered(self.demand_scale, "site.random.demand_scale")
        return self


class Site(Strict):
    """What changes over the day at the site (moe2sim/sim/site.py): expert outages and degradations,
    the latency targets the service is judged against (x each category's latency_budget_s; 1 outside the
    listed hours), and the energy price per kJ of active energy (0 outside the listed hours).
    `random`: every episode of the env draws its outages, energy price and demand level from this
    distribution instead (then `outages` and `energy_price` stay empty). `publish`: what the site
    announces ahead, which the env then observes (moe2sim/envs/handler.py): the energy price over the
    coming hours, and the announced outages (maintenance windows); unannounced outages stay unknown
    until they happen."""

    outages: list[Outage] = Field(default_factory=list)
    latency_targets: list[DailyValue] = Field(default_factory=list, description="value: x latency_budget_s")
    energy_price: list[DailyValue] = Field(default_factory=list, description="value: reward lost per kJ")
    random: SiteDistribution | None = None
    publish: list[Literal["energy_price", "maintenance"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "Site":
        for o in {o.expert for o in self.outages}:
            _disjoint(f"outages of {o}", [(x.start_s, x.end_s) for x in self.outages if x.expert == o])
        for name in ("latency_targets", "energy_price"):
            _disjoint(f"site.{name}", [(x.start_h, x.end_h) for x in getattr(self, name)])
        if any(x.value <= 0 for x in self.latency_targets):
            raise ValueError("site.latency_targets: a value must be > 0")
        if self.random is not None and (self.outages or self.energy_price):
            raise ValueError("site.random draws the outages and energy price of each episode: leave site.outages "
                             "and site.energy_price empty")
        return self


class EnvConfig(Strict):
    """The Gymnasium environment: one step = one control window; the agent sets the budgets.

    action: box (budgets on log scales), discrete (a grid of L² budget pairs), or subset (one action per
    distinct subset the selector reaches on a subset_grid² budget grid, plus action 0 = hold:
    moe2sim/envs/actions.py)."""

    window_s: PositiveFloat = 300.0
    windows: Annotated[int, Field(ge=1)] = 288
    energy_budget_J: tuple[PositiveFloat, PositiveFloat] = (150.0, 1500.0)
    latency_scale: tuple[PositiveFloat, PositiveFloat] = Field(
        (0.3, 2.0), description="range of the multiplier of every category's latency budget")
    energy_allowance_J: PositiveFloat = Field(5e6, description="active energy the episode may spend")
    action: Literal["box", "discrete", "subset"] = "box"
    discrete_levels: Annotated[int, Field(ge=2)] = 5
    subset_grid: Annotated[int, Field(ge=2, le=64)] = 16
    reward: RewardWeights = RewardWeights()

    @model_validator(mode="after")
    def _ranges(self) -> "EnvConfig":
        for name in ("energy_budget_J", "latency_scale"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name}: the lower end must be below the upper end")
        return self


class Traces(Strict):
    prompts: PathText = "prompts.parquet"
    quality: PathText = "quality.parquet"
    embeddings: PathText = "embeddings.npz"
    leakage: PathText | None = Field("leakage.csv", description="declared overlaps between an expert's training "
                                     "data and a task's train split (data/leakage.py); null: none declared")
    split: Literal["train", "test"] = "test"


class Outputs(Strict):
    format: Literal["parquet", "csv"] = "parquet"
    report: bool = True


class Scenario(Strict):
    name: Name
    description: str = ""
    mixed_boundaries: str = Field("", description=(
        "why the experts' energy boundaries differ (module rails, GPU board, wall plug), where they do on purpose: "
        "runs then state it as a note instead of warning that the energy totals are not comparable"))
    seed: Seed = 0
    service_noise: bool = Field(False, description=(
        "draw every expert's service time and power with its profile's spread (lognormal, mean 1)"))
    data_dir: PathText | None = Field(None, description="folder of the data files; unset: the bundled traces")
    duration_s: Annotated[float, Field(gt=0, le=MAX_DURATION_S)] | None = None
    queries: Annotated[int, Field(ge=1, le=MAX_QUERIES)] | None = None
    traces: Traces = Traces()
    experts: list[Expert] = Field(min_length=1)
    categories: list[Category] = Field(min_length=1)
    energy_budget_J: PositiveFloat
    arrivals: Arrivals
    policy: PolicyConfig = PolicyConfig()
    outputs: Outputs = Outputs()
    sweep: SweepConfig | None = None
    env: EnvConfig | None = None
    site: Site | None = None
    # Set by the loader, not by users: the scenario file (relative paths are resolved from its folder).
    file: Path = Field(Path("scenario.yaml"), exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> "Scenario":
        if (self.duration_s is None) == (self.queries is None):
            raise ValueError("give exactly one of duration_s or queries")
        for what, names in (("experts", [e.name for e in self.experts]),
                            ("categories", [c.name for c in self.categories])):
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"duplicate {what} name(s): {sorted(dup)}")
        known = {e.name for e in self.experts}
        allowed = self.policy.subset if self.policy.subset is not None else sorted(known)
        unknown = sorted(set(allowed) - known)
        if unknown:
            raise ValueError(f"policy.subset names unknown expert(s) {unknown}; experts are {sorted(known)}")
        if len(set(allowed)) < len(allowed):
            raise ValueError(f"policy.subset names an expert twice: {allowed}")
        if self.policy.k > len(allowed):
            raise ValueError(f"policy.k = {self.policy.k} is larger than the {len(allowed)} allowed experts")
        if self.site is not None:
            unknown = sorted({o.expert for o in self.site.outages} - known)
            if unknown:
                raise ValueError(f"site.outages name unknown expert(s) {unknown}; experts are {sorted(known)}")
            drawn = self.site.random
            unknown = sorted({n for o in drawn.outages for n in o.experts} - known) if drawn else []
            if unknown:
                raise ValueError(f"site.random.outages name unknown expert(s) {unknown}; experts are {sorted(known)}")
            if drawn and drawn.demand_scale != (1.0, 1.0) and self.arrivals.expected_rate_per_s() is None:
                raise ValueError("site.random.demand_scale scales a Poisson or diurnal arrival rate, not a replayed file")
        peak = self.arrivals.peak_rate_per_s()
        if self.duration_s is not None and peak is not None and self.duration_s * peak > MAX_QUERIES:
            raise ValueError(f"duration_s × peak arrival rate = {self.duration_s * peak:.3g} queries, over the limit of "
                             f"{MAX_QUERIES:,} per run: shorten duration_s or lower the rate")
        return self

    @property
    def data_root(self) -> Path:
        """data_dir, relative to the scenario's folder; the bundled traces when unset."""
        if self.data_dir is None:
            return bundled_path("traces")
        return (self.file.parent / Path(self.data_dir).expanduser()).resolve()

    def path(self, relative: str) -> Path:
        """Resolve a data path: absolute as is, else under data_root."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.data_root / p).resolve()

    @property
    def allowed_experts(self) -> list[str]:
        return self.policy.subset if self.policy.subset is not None else [e.name for e in self.experts]
