"""hardware/: meters on this machine's real code paths, a tiny real model served on loopback, live
runs of a scenario's policy against it, and comparison with the simulator."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from moe2sim.hardware.attribution import EnergyShares
from moe2sim.hardware.backends import BackendError, Generation, HFBackend, OpenAIBackend
from moe2sim.hardware.collect import MeasurementPlan, collect, fit, shape_grid
from moe2sim.report.compare_table import error_table
from moe2sim.errors import InputError
from moe2sim.hardware.live import run_live
from moe2sim.hardware.meters import MeterUnavailable, SampledCounter, jetson_meter, open_meter, rapl_meter
from moe2sim.hardware.serve import serve
from moe2sim.devices.profiles import save_profile
from moe2sim.scenario import load_scenario
from moe2sim.twin import Twin

ROOT = Path(__file__).resolve().parents[1]


def test_auto_meter_measures_or_fails_loudly():
    """Here (no GPU, no Jetson, no RAPL) it must raise, naming every backend it tried; where a meter
    exists it must read a positive energy over a short window — never a silent zero."""
    try:
        meter = open_meter("auto")
    except MeterUnavailable as exc:
        for backend in ("NVML", "Jetson", "RAPL"):
            assert backend in str(exc)
        return
    t0 = meter.now()
    time.sleep(0.5)
    m = meter.measure(t0, meter.now())
    meter.close()
    assert m.energy_J > 0 and m.resolution_J > 0


def write_rails(root: Path, chips: dict[str, list[tuple[str, int, int]]]) -> str:
    """INA3221 hwmon folders as Jetson Linux lays them out: per chip, (label, mV, mA) per channel."""
    for n, (chip, channels) in enumerate(chips.items()):
        hwmon = root / "ina3221" / chip / "hwmon" / f"hwmon{3 + n}"
        hwmon.mkdir(parents=True)
        for i, (label, mv, ma) in enumerate(channels, start=1):
            (hwmon / f"in{i}_label").write_text(label + "\n")
            (hwmon / f"in{i}_input").write_text(str(mv))
            (hwmon / f"curr{i}_input").write_text(str(ma))
    return str(root / "ina3221" / "*" / "hwmon" / "hwmon*")


def mean_power(meter: SampledCounter) -> float:
    t0 = meter.now()
    time.sleep(0.3)
    t1 = meter.now()
    m = meter.measure(t0, t1)
    meter.close()
    return m.energy_J / (t1 - t0)


def test_jetson_rails_are_read_from_sysfs(tmp_path):
    """AGX Orin: four module rails on two chips, summed; not-connected channels skipped."""
    agx = write_rails(tmp_path / "agx", {
        "1-0040": [("VDD_GPU_SOC", 800, 5000), ("VDD_CPU_CV", 800, 2500), ("VIN_SYS_5V0", 5000, 1000)],
        "1-0041": [("NC", 5000, 9999), ("VDDQ_VDD2_1V8AO", 1000, 1000), ("NC", 5000, 9999)]})
    meter = jetson_meter(agx)
    assert meter.name == "jetson-ina3221:VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO"
    assert mean_power(meter) == pytest.approx(4.0 + 2.0 + 5.0 + 1.0, rel=0.05)
    with pytest.raises(MeterUnavailable):
        jetson_meter(str(tmp_path / "nothing" / "*"))


def test_jetson_total_input_rail_is_not_summed_with_its_branches(tmp_path):
    """Orin NX/Nano: VDD_IN supplies VDD_CPU_GPU_CV and VDD_SOC; the module's power is VDD_IN alone."""
    nx = write_rails(tmp_path / "nx", {
        "1-0040": [("VDD_IN", 5000, 3000), ("VDD_CPU_GPU_CV", 1000, 4000), ("VDD_SOC", 1000, 3000)]})
    meter = jetson_meter(nx)
    assert meter.name == "jetson-ina3221:VDD_IN"
    assert mean_power(meter) == pytest.approx(15.0, rel=0.05)


def write_atomic(path: Path, text: str) -> None:
    """sysfs files change in place atomically; a plain write_text would expose an empty file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_rapl_counter_wraps_around(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000")
    (zone / "energy_uj").write_text("900000")
    meter = rapl_meter(str(zone))
    t0 = meter.points[0][0]  # a window between two readings: no interpolation error
    time.sleep(0.05)
    write_atomic(zone / "energy_uj", "100000")  # the µJ counter wrapped: +0.2 J
    time.sleep(0.05)
    write_atomic(zone / "energy_uj", "150000")  # +0.05 J
    time.sleep(0.05)
    t1 = meter.points[-1][0]
    write_atomic(zone / "energy_uj", "150001")  # a reading after t1 closes the window
    m = meter.measure(t0, t1)
    meter.close()
    assert m.energy_J == pytest.approx(0.25, abs=1e-9)
    with pytest.raises(MeterUnavailable):
        rapl_meter(str(tmp_path / "absent"))


def test_coarse_counter_attribution_error_is_bounded():
    """A counter that updates every 100 ms (like NVML on the H200) under a known power trace:
    windows much shorter than an update still get their energy within the stated resolution."""
    start = time.perf_counter()
    power = lambda t: 150.0 + 50.0 * np.sin(t * 7)  # noqa: E731  W, varies within a step

    def counter() -> float:
        t = time.perf_counter() - start
        step = np.floor(t / 0.1) * 0.1
        grid = np.linspace(0, step, 2001)
        return float(np.trapezoid(power(grid), grid)) if step > 0 else 0.0

    meter = SampledCounter(counter, "synthetic-100ms", max_power_W=200.0)
    time.sleep(0.25)
    windows = []
    for _ in range(5):
        t0 = meter.now()
        time.sleep(0.03)
        windows.append((t0, meter.now()))
        time.sleep(0.07)
    for t0, t1 in windows:
        m = meter.measure(t0, t1)
        grid = np.linspace(t0 - start, t1 - start, 200)
        truth = float(np.trapezoid(power(grid), grid))
        assert m.energy_J > 0
        assert abs(m.energy_J - truth) <= m.resolution_J, (m, truth)
    meter.close()


def steady_counter(power_W: float, step_s: float = 0.0) -> tuple[SampledCounter, float]:
    """A cumulative-energy reading of a device drawing power_W, updating every step_s (0: always)."""
    start = time.perf_counter()

    def joules() -> float:
        t = time.perf_counter() - start
        return power_W * (np.floor(t / step_s) * step_s if step_s else t)

    return SampledCounter(joules, f"steady-{power_W:g}W", max_power_W=power_W), start


@pytest.mark.parametrize("step_s", [0.0, 0.1], ids=["fine", "nvml-like-100ms"])
def test_concurrent_requests_share_the_device_energy(step_s):
    """Three overlapping requests on a 200 W device: each gets the energy of the intervals it ran in,
    divided by how many ran then; together they get the device's energy over their union, not more."""
    meter, _ = steady_counter(200.0, step_s)
    device = EnergyShares(meter)
    time.sleep(0.15)
    a = device.begin()
    time.sleep(0.1)
    b = device.begin()
    time.sleep(0.1)
    c = device.begin()
    time.sleep(0.1)
    device.stop(a)
    time.sleep(0.1)
    device.stop(b, read=False)  # a failed request: not read, but it still took its shares
    time.sleep(0.1)
    device.stop(c)
    read = {name: device.energy(span) for name, span in (("a", a), ("c", c))}
    spans = [a, b, c]
    cuts = sorted({t for s in spans for t in (s.start, s.end)})
    truth = {"a": 0.0, "c": 0.0}
    for lo, hi in zip(cuts, cuts[1:]):
        running = [s for s in spans if s.start <= lo and s.end >= hi]
        for name, span in (("a", a), ("c", c)):
            if span in running:
                truth[name] += 200.0 * (hi - lo) / len(running)
    for name, m in read.items():
        assert abs(m.energy_J - truth[name]) <= max(m.resolution_J, 1e-6), (name, m, truth[name])
        assert m.energy_J < 200.0 * (m.duration_s - 0.05)  # well under the whole device over its window
    assert read["a"].resolution_J == pytest.approx(meter.max_power_W * read["a"].update_s * 4 / 2)  # b, c began inside
    with pytest.raises(ValueError, match="still running"):
        device.energy(device.begin())
    meter.close()


def test_serve_splits_energy_between_concurrent_requests():
    """`serve --slots 2` on a metered device: two requests served at once report energies that add up
    to the device's energy while they ran (a meter per request window would count the overlap twice)."""
    meter, _ = steady_counter(100.0)
    server = serve(HFBackend("tiny-llama"), meter, "127.0.0.1", 0, slots=2)
    client = OpenAIBackend(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        client.generate("warm up", 16, 4)
        with ThreadPoolExecutor(2) as pool:
            gens = list(pool.map(lambda _: client.generate("hello", 64, 48), range(2)))
    finally:
        server.shutdown()
        meter.close()
    energies = [g.extra["energy_J"] for g in gens]
    spans = [(g.extra["ttft_s"] + g.extra["decode_s"]) for g in gens]
    assert all(e > 0 for e in energies)
    # each reported energy is below its own window at full power: the overlap was shared
    assert all(e < 100.0 * s for e, s in zip(energies, spans)), (energies, spans)


@pytest.fixture(scope="module")
def tiny_trace() -> pd.DataFrame:
    """`collect` on a real tiny Llama on this CPU, over a grid of shapes (no meter here)."""
    trace = collect(HFBackend("tiny-llama"), shape_grid("16x8,48x8,16x24,48x24"), None, "cpu",
                    MeasurementPlan(reps=2, warmup=1, idle_s=0))
    assert trace["energy_J"].isna().all()  # no meter: NaN, not 0
    return trace


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory, tiny_trace) -> Path:
    """fit on the collected trace (latency fitted, power assumed)."""
    path = tmp_path_factory.mktemp("profile") / "cpu-tiny.yaml"
    save_profile(fit(tiny_trace, path, "cpu-tiny", "this CPU", assume_power_W=30.0), path)
    return path


def test_collected_trace_replays_in_the_simulator(tmp_path, tiny_trace, tiny_profile):
    """`collect` writes the schema the simulator replays. Without measured energy the replay says what
    to do instead; once the trace has energy (as a metered collection writes it), the simulator draws
    each leg's timings from the warm rows of the nearest shape, rescaled to the query's shape."""
    from moe2sim.errors import InputError

    trace_path = tmp_path / "trace.csv"
    tiny_trace.to_csv(trace_path, index=False)
    scenario = live_scenario(tmp_path, tiny_profile, queries=10)
    replay = [f"experts.{e}.service.file={trace_path}" for e in ("a", "b")]
    with pytest.raises(InputError, match="assume-power") as err:
        Twin.build(load_scenario(scenario, replay))
    assert err.value.file == str(trace_path) and err.value.field == "active_energy_J"
    tiny_trace.assign(active_energy_J=30.0 * tiny_trace["latency_s"]).to_csv(trace_path, index=False)
    twin = Twin.build(load_scenario(scenario, replay))
    _, queries, legs = twin.simulate()
    assert len(queries) == 10 and len(legs) == 20
    nearest = tiny_trace[tiny_trace["warm"] & (tiny_trace["prompt_tokens"] == 48)
                         & (tiny_trace["output_tokens"] == 8)]  # the scenario asks 32x12
    want = twin.experts[0].service.predict(np.array([32]), np.array([12]))
    have = twin.experts[0].service.predict(np.array([48]), np.array([8]))
    for column, k in (("ttft_s", 0), ("decode_s", 1)):
        unscaled = legs[column].to_numpy() * have[k][0] / want[k][0]
        assert np.isclose(unscaled[:, None], nearest[column].to_numpy()[None, :], rtol=1e-9).any(axis=1).all()


def start_server(port_holder: list, backend) -> object:
    server = serve(backend, None, "127.0.0.1", 0)
    port_holder.append(server.server_address[1])
    return server


@pytest.fixture(scope="module")
def two_servers():
    """Two `hardware serve` processes on loopback, each a tiny Llama on the CPU."""
    procs, urls = [], []
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "moe2sim.hardware", "serve", "--backend", "hf:tiny-llama",
                                 "--meter", "none", "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{match.group(1)}")
    yield urls
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=60)  # a clean shutdown can take a while on a loaded machine
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def live_scenario(tmp_path: Path, profile: Path, queries: int = 24) -> Path:
    raw = {
        "name": "live-cpu", "seed": 2, "queries": queries, "data_dir": str(ROOT / "traces"),
        "experts": [{"name": "a", "model": "meta-llama/Meta-Llama-3-8B", "profile": str(profile)},
                    {"name": "b", "model": "cognitivecomputations/dolphin-2.9-llama3-8b", "profile": str(profile)}],
        "categories": [{"name": "gsm8k", "mix": 1.0, "latency_budget_s": 5.0,
                        "prompt_tokens": {"dist": "fixed", "mean": 32}, "output_tokens": {"dist": "fixed", "mean": 12}}],
        "energy_budget_J": 100.0, "arrivals": {"process": "poisson", "rate_per_s": 1.0},
        "policy": {"name": "gate", "k": 2}, "outputs": {"report": False},
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_serve_reports_timings_and_null_energy(two_servers):
    gen = OpenAIBackend(two_servers[0]).generate("hello", 20, 6)
    assert gen.output_tokens == 6 and gen.ttft_s > 0 and gen.decode_s > 0
    x = gen.extra
    assert x["energy_J"] is None and x["energy_method"] == "none"
    assert x["ttft_s"] > 0 and x["prompt_tokens"] == 20


def test_live_then_compare_with_the_simulator(tmp_path, tiny_profile, two_servers):
    from moe2sim.experiments.run import run_scenario

    scenario = load_scenario(live_scenario(tmp_path, tiny_profile))
    twin = Twin.build(scenario)
    queries, legs = run_live(twin, {"a": two_servers[0], "b": two_servers[1]})
    assert len(queries) == 24 and len(legs) == 48
    assert (queries["error"] == "").all()
    assert queries["energy_J"].isna().all()  # no meter: NaN, never 0
    _, sim_q, _ = twin.simulate()
    # the same policy object decided the same experts for the same workload
    assert list(queries["experts"]) == list(sim_q["experts"])
    assert list(queries["prompt_id"]) == list(sim_q["prompt_id"])
    live_dir, sim_dir = tmp_path / "live", tmp_path / "sim"
    live_dir.mkdir()
    queries.to_parquet(live_dir / "queries.parquet")
    legs.to_parquet(live_dir / "legs.parquet")
    run_scenario(scenario, sim_dir, progress=False)
    table = error_table(sim_dir, live_dir)
    overall = table[table["level"] == "all"].iloc[0]
    assert np.isfinite(overall["latency_mean_err_pct"]) and np.isnan(overall["energy_mean_err_pct"])
    assert set(table[table["level"].str.startswith("expert")]["name"]) == {"a", "b"}
    per_expert = table.set_index(["level", "name"])
    for level in ("expert (TTFT)", "expert (time per output token)"):
        for expert in ("a", "b"):
            assert np.isfinite(per_expert.loc[(level, expert), "latency_mean_err_pct"])
    # 12 output tokens: 11 decode steps; the per-token time is the decode time over them
    tpot = per_expert.loc[("expert (time per output token)", "a"), "latency_mean_measured_s"]
    assert tpot == pytest.approx((legs[legs["expert"] == "a"]["decode_s"] / 11).mean())


def test_live_takes_server_queueing_out_of_the_service_time(tmp_path, tiny_profile):
    """Both experts on one real tiny-Llama server with one slot and a burst of queries: requests wait
    at the server. As in the simulator, that wait is queue_s, not part of ttft_s, and service starts
    after it: start_s + ttft_s + decode_s is the leg's end as the client saw it."""
    server = serve(HFBackend("tiny-llama"), None, "127.0.0.1", 0, slots=1)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        scenario = load_scenario(live_scenario(tmp_path, tiny_profile, queries=12), ["arrivals.rate_per_s=1000"])
        _, legs = run_live(Twin.build(scenario), {"a": url, "b": url})
    finally:
        server.shutdown()
    assert (legs["error"] == "").all() and (legs["queue_s"] >= 0).all()
    waited = legs[legs["queue_s"] > 0.02]
    assert len(waited) >= 4, legs[["queue_s", "ttft_s"]]  # the burst did queue
    # the wait is not counted as time to first token: what the client adds to the server's own TTFT (HTTP,
    # scheduling) stays well under the waits (medians, so one leg slowed by a loaded machine does not decide)
    assert np.median(waited["ttft_s"] - waited["server_ttft_s"]) < np.median(waited["queue_s"])
    assert (legs["ttft_s"] > 0).all() and (legs["ttft_s"] >= legs["server_ttft_s"] - 1e-3).all()
    end = legs["start_s"] + legs["ttft_s"] + legs["decode_s"]
    np.testing.assert_allclose(end, legs["end_s"], atol=0.01)


def test_experts_on_one_device_split_its_energy(tmp_path, tiny_profile):
    """One server holding both experts (two tiny Llamas) on a 100 W device, the scenario's k = 2 policy
    live over it: each leg is served by the expert it names, and the legs' energies add up to the
    device's energy while it served them — not twice that, though every query's two legs overlap."""
    meter, _ = steady_counter(100.0)
    server = serve({"a": HFBackend("tiny-llama"), "b": HFBackend("tiny-llama")}, meter, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(BackendError, match="not served here"):
            OpenAIBackend(url, "c").generate("hello", 8, 2)
        scenario = load_scenario(live_scenario(tmp_path, tiny_profile, queries=10))
        queries, legs = run_live(Twin.build(scenario), {"a": url, "b": url})
    finally:
        server.shutdown()
        meter.close()
    assert (legs["error"] == "").all() and len(legs) == 20
    assert (legs["energy_J"] > 0).all()
    service = legs["server_ttft_s"] + legs["server_decode_s"]
    union, reach = 0.0, -np.inf  # of the client-side leg spans, which contain the server's
    for start, end in sorted(zip(legs["start_s"], legs["end_s"])):
        union += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    assert legs["energy_J"].sum() <= 100.0 * union * 1.02  # no leg's overlap was metered twice
    assert legs["energy_J"].sum() < 0.8 * 100.0 * service.sum()  # metering each leg whole would exceed this


class FlakyBackend:
    """A real backend whose first attempt at each prompt fails with a server-side error."""

    name = "flaky"

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def generate(self, prompt, prompt_tokens, max_tokens, on_token=None) -> Generation:
        with self.lock:
            self.calls[prompt] = self.calls.get(prompt, 0) + 1
            fail = self.calls[prompt] % 2 == 1
        if fail:
            raise BackendError("injected failure", retryable=True)
        if on_token:
            for _ in range(max_tokens):
                on_token("x")
        return Generation("x" * max_tokens, prompt_tokens, max_tokens, 0.001, 0.002)


def test_live_retries_server_errors_and_records_unreachable_experts(tmp_path, tiny_profile):
    flaky = serve(FlakyBackend(), None, "127.0.0.1", 0)
    try:
        scenario = load_scenario(live_scenario(tmp_path, tiny_profile, queries=8), ["arrivals.rate_per_s=4"])
        twin = Twin.build(scenario)
        dead = "http://127.0.0.1:9"  # nothing listens on the discard port here
        queries, legs = run_live(twin, {"a": f"http://127.0.0.1:{flaky.server_address[1]}", "b": dead}, retries=2)
    finally:
        flaky.shutdown()
    assert len(queries) == 8 and len(legs) == 16  # every query sent is recorded
    a, b = legs[legs["expert"] == "a"], legs[legs["expert"] == "b"]
    assert (a["error"] == "").all() and (a["attempts"] >= 2).all()  # retried past the injected failures
    assert (b["error"].str.contains("unreachable")).all() and b["ttft_s"].isna().all()
    assert (queries["error"] != "").all()


def test_collect_writes_how_the_trace_was_measured(tmp_path):
    """`collect` puts the machine, stack and meter beside the trace; nothing this machine lacks (no GPU,
    no meter) is filled in."""
    import json
    from importlib import metadata

    out = tmp_path / "trace.csv"
    proc = subprocess.run([sys.executable, "-m", "moe2sim.hardware", "collect", "--backend", "hf:tiny-llama", "--meter", "none",
                           "--shapes", "16x4", "--reps", "1", "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "trace.device.json").read_text())
    assert record["stack"]["torch"] == metadata.version("torch") and record["backend"] == "tiny-llama"
    assert record["meter"]["name"] == "none" and "gpu" not in record and "driver" not in record
    assert len(pd.read_csv(out)) == 2  # one warm-up run and one repetition


def test_cli_bad_input_exit_code_2(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "moe2sim.hardware", *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=ROOT)
    for args in (["collect", "--backend", "hf:no-such-model", "--meter", "none", "--out", str(tmp_path / "t.csv")],
                 ["collect", "--backend", "hf:tiny-llama", "--meter", "nvml", "--out", str(tmp_path / "t.csv")],
                 ["collect", "--backend", "bogus", "--out", str(tmp_path / "t.csv")],
                 ["fit", str(tmp_path / "missing.csv"), "--name", "x", "--device-name", "y", "--out", str(tmp_path / "p.yaml")],
                 ["compare", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "c")],
                 ["serve", "--backend", "a=hf:tiny-llama", "--backend", "a=hf:tiny-llama", "--meter", "none"]):
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("hardware: error:")
    assert not (tmp_path / "t.csv").exists()


def test_live_sends_each_endpoint_the_key_its_scenario_names(tmp_path, tiny_profile, monkeypatch):
    """A server that requires a key (serve --api-key): the scenario names the variable holding it
    (experts.N.api_key_env); live sends it, and every query is answered. Unset, the run is refused naming the
    field before anything is sent; without a key, the server's 401s fail every leg. The key reaches no record."""
    secret = "sk-test-0123456789abcdef"
    server = serve(HFBackend("tiny-llama"), None, "127.0.0.1", 0, slots=2, api_key=secret)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        raw = yaml.safe_load(live_scenario(tmp_path, tiny_profile, queries=4).read_text())
        for expert in raw["experts"]:
            expert["api_key_env"] = "MOE2SIM_TEST_ENDPOINT_KEY"
        keyed = tmp_path / "keyed.yaml"
        keyed.write_text(yaml.safe_dump(raw))
        twin = Twin.build(load_scenario(keyed))
        monkeypatch.delenv("MOE2SIM_TEST_ENDPOINT_KEY", raising=False)
        with pytest.raises(InputError, match=r"experts\.0\.api_key_env"):
            run_live(twin, {"a": url, "b": url})
        monkeypatch.setenv("MOE2SIM_TEST_ENDPOINT_KEY", secret)
        queries, legs = run_live(twin, {"a": url, "b": url})
        assert (queries["error"] == "").all() and len(legs) == 8
        assert secret not in queries.to_csv() + legs.to_csv()
        plain = Twin.build(load_scenario(live_scenario(tmp_path, tiny_profile, queries=2)))
        queries, _ = run_live(plain, {"a": url, "b": url}, retries=0)
        assert (queries["error"] != "").all()
    finally:
        server.shutdown()
