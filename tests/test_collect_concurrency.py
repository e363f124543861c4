"""`hardware collect --concurrency`: waves of n equal requests kept in flight against a real server
(`hardware serve`, a tiny Llama on this CPU, over loopback HTTP), per-request rows with their level,
energy shared by the attribution module, and `hardware fit` turning the trace into a batching block."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import assert_same_data
from moe2sim.hardware.backends import HFBackend, OpenAIBackend
from moe2sim.hardware.collect import MeasurementPlan, collect, fit, queued_note, shape_grid
from moe2sim.hardware.meters import SampledCounter
from moe2sim.hardware.serve import serve

ROOT = Path(__file__).resolve().parents[1]
HW = [sys.executable, "-m", "moe2sim.hardware"]


@pytest.fixture(scope="module")
def two_slot_server():
    """`hardware serve --slots 2` in its own process, as a user runs it."""
    proc = subprocess.Popen([*HW, "serve", "--backend", "hf:tiny-llama", "--meter", "none", "--port", "0",
                             "--slots", "2", "--threads", "1"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    match = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    assert match
    yield f"http://127.0.0.1:{match.group(1)}"
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_collect_at_two_levels_then_fit_a_batching_block(tmp_path, two_slot_server):
    out = tmp_path / "cpu.csv"
    run = subprocess.run([*HW, "collect", "--backend", f"openai:{two_slot_server}", "--meter", "none",
                          "--concurrency", "1,2", "--shapes", "16x64,48x96", "--reps", "2", "--warmup", "1",
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "waited" not in run.stderr  # two slots: both requests of a wave ran together
    trace = pd.read_csv(out)
    # per level n: n requests a wave, (1 warm-up + 2 repetitions) waves per shape, 2 shapes
    assert trace.groupby("concurrency").size().to_dict() == {1: 6, 2: 12}
    assert trace.groupby(["concurrency", "warm"]).size()[(2, True)] == 8
    assert set(trace[["prompt_tokens", "output_tokens"]].itertuples(index=False)) == {(16, 64), (48, 96)}
    assert (trace["ttft_s"] > 0).all() and (trace["decode_s"] > 0).all()
    assert trace["server_queue_s"].notna().all()  # `hardware serve` says how long each request waited
    # no meter: energy is not measured, so it is empty (NaN), never 0, and the provenance says so
    assert trace[["energy_J", "active_energy_J", "idle_power_W"]].isna().all().all()
    assert (trace["meter"] == "none").all()
    record = json.loads(out.with_suffix(".device.json").read_text())
    assert record["meter"]["name"] == "none" and record["plan"]["concurrency"] == [1, 2]

    profile = tmp_path / "cpu.yaml"
    fit = subprocess.run([*HW, "fit", str(out), "--name", "tiny-cpu", "--device-name", "cpu", "--assume-power", "10",
                          "--out", str(profile)], capture_output=True, text=True, cwd=ROOT)
    assert fit.returncode == 0, fit.stderr
    fitted = yaml.safe_load(profile.read_text())
    assert fitted["energy_boundary"] == "none" and fitted["spread"]["latency_cv"]["provenance"] == "measured"
    batching = fitted["batching"]
    assert batching["max_batch"] == 2
    assert batching["decode_slowdown"]["provenance"] == "derived" and batching["decode_slowdown"]["value"] >= 0
    # the fit keeps β_p only where it beats the parameter-free "tokens" law (moe2sim.devices.concurrency): either
    # law may win on a few noisy CPU rows, and the block says which
    assert (batching["prefill_law"] == "tokens" and "prefill_slowdown" not in batching) or \
        (batching.get("prefill_law", "slowdown") == "slowdown" and batching["prefill_slowdown"]["value"] >= 0)
    assert batching["power_growth_W"]["provenance"] == "assumed"  # no meter: power growth not measured


def steady_meter(power_W: float) -> SampledCounter:
    start = time.perf_counter()
    return SampledCounter(lambda: power_W * (time.perf_counter() - start), f"steady-{power_W:g}W", power_W)


def test_concurrent_requests_share_the_metered_energy():
    """With a meter, each request of a wave gets its share of the device's energy (hardware/attribution):
    on a device drawing a steady 40 W, idle power is 40 W, every active energy is ~0, and the two
    requests of a wave together get no more than the device's energy over the wave."""
    trace = collect_two_levels(serve(HFBackend("tiny-llama"), None, "127.0.0.1", 0, slots=2), steady_meter(40.0))
    assert trace["idle_power_W"].iloc[0] == pytest.approx(40.0, rel=1e-3)
    assert trace["energy_J"].gt(0).all()
    assert np.abs(trace["active_energy_J"]).max() < 1e-2 * trace["energy_J"].min()
    pairs = trace[trace["concurrency"] == 2]
    for _, wave in pairs.groupby(np.arange(len(pairs)) // 2):  # the rows of one wave are adjacent
        assert wave["energy_J"].sum() <= 40.0 * (wave["latency_s"].max() + 0.05)
        assert wave["energy_J"].sum() >= 40.0 * wave["latency_s"].min()
    assert queued_note(trace) is None


def collect_two_levels(server, meter: SampledCounter) -> pd.DataFrame:
    """`collect` of one 32x16 shape at concurrency 1 and 2 (2 repetitions, 1 warm-up) from a real server on
    loopback, metered by `meter`; the server and the meter are closed after."""
    try:
        return collect(OpenAIBackend(f"http://127.0.0.1:{server.server_address[1]}"), shape_grid("32x16"), meter,
                       "cpu", MeasurementPlan(reps=2, warmup=1, idle_s=0.2, concurrency=(1, 2)))
    finally:
        server.shutdown()
        meter.close()


def test_idle_is_measured_before_and_after_and_fit_takes_p_max_from_the_recorded_limit(tmp_path):
    """A device whose idle draw rises from 40 to 50 W once it has served a request: collect keeps both idle
    powers (active energy subtracts the one before); `fit` writes the power limit that collect recorded beside
    the trace (`<trace>.device.json` power_limit_W) as the measured P_max of the batching block."""
    server = serve(HFBackend("tiny-llama"), None, "127.0.0.1", 0, slots=2)
    state = {"t": time.perf_counter(), "J": 0.0}

    def joules() -> float:  # ∫ P dt with P = 40 W until the server has served a request, 50 W after
        now = time.perf_counter()
        state["J"] += (50.0 if server.served() else 40.0) * (now - state["t"])
        state["t"] = now
        return state["J"]

    trace = collect_two_levels(server, SampledCounter(joules, "step-40-50W", 40.0))
    assert trace["idle_power_W"].iloc[0] == pytest.approx(40.0, rel=1e-2)
    assert trace["idle_power_after_W"].iloc[0] == pytest.approx(50.0, rel=1e-2)
    path = tmp_path / "trace.csv"
    trace.to_csv(path, index=False)
    path.with_suffix(".device.json").write_text(json.dumps({"power_limit_W": 300.0}))
    profile = fit(trace, path, "step", "cpu", None)
    assert profile.batching.max_power_W.value == 300.0 and profile.batching.max_power_W.provenance == "measured"
    assert profile.idle_power_W.value == trace["idle_power_W"].iloc[0] and "50." in profile.idle_power_W.source
    path.with_suffix(".device.json").write_text(json.dumps({"meter": {"name": "none"}}))
    assert fit(trace, path, "step", "cpu", None).batching.max_power_W is None  # no limit recorded: none invented


def test_a_server_with_fewer_slots_than_the_level_is_reported():
    server = serve(HFBackend("tiny-llama"), None, "127.0.0.1", 0, slots=1)
    try:
        trace = collect(OpenAIBackend(f"http://127.0.0.1:{server.server_address[1]}"), shape_grid("16x128"), None,
                        "cpu", MeasurementPlan(reps=2, warmup=0, idle_s=0, concurrency=(2,)))
    finally:
        server.shutdown()
    assert "--slots 2" in queued_note(trace)


@pytest.mark.parametrize("levels", ["0", "2,2", "a,b", "", "5000"])
def test_bad_concurrency_exits_2_naming_the_flag(tmp_path, levels):
    out = tmp_path / "t.csv"
    run = subprocess.run([*HW, "collect", "--backend", "hf:tiny-llama", "--meter", "none", "--concurrency", levels,
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and run.stderr.startswith("hardware: error: --concurrency")
    assert "Traceback" not in run.stderr and not out.exists()


def test_batch_in_flight_runs_a_wave_as_one_batch(tmp_path):
    """`--in-flight batch`: a local model decodes the n requests of a wave as one batch, so the n rows of a
    wave carry the batch's timings; a server backend cannot batch for the collector (exit 2)."""
    out = tmp_path / "batch.csv"
    run = subprocess.run([*HW, "collect", "--backend", "hf:tiny-llama", "--threads", "1", "--meter", "none",
                          "--in-flight", "batch", "--concurrency", "1,3", "--shapes", "16x8", "--reps", "2",
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    trace = pd.read_csv(out)
    assert trace.groupby("concurrency").size().to_dict() == {1: 3, 3: 9}
    for _, wave in trace[trace["concurrency"] == 3].groupby(np.arange(9) // 3):
        assert wave["ttft_s"].nunique() == 1 and wave["decode_s"].nunique() == 1
    assert (trace["output_tokens"] == 8).all() and trace["server_queue_s"].isna().all()
    bad = subprocess.run([*HW, "collect", "--backend", "openai:http://127.0.0.1:9", "--meter", "none",
                          "--in-flight", "batch", "--out", str(tmp_path / "x.csv")], capture_output=True, text=True,
                         cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("hardware: error: --in-flight")


def test_the_shipped_cpu_profile_is_what_the_documented_fit_makes_of_the_shipped_trace(tmp_path):
    """traces/README.md names the command that fits profiles/smollm2-135m-cpu.yaml from
    devices/cpu_concurrency.csv; run as written (output redirected), it gives the shipped profile."""
    import shlex

    text = (ROOT / "traces" / "README.md").read_text()
    command = next(line.strip() for line in text.splitlines()
                   if line.strip().startswith("python -m moe2sim.hardware fit traces/devices/cpu_concurrency.csv"))
    args = shlex.split(command)[3:]
    args[args.index("--out") + 1] = str(tmp_path / "p.yaml")
    run = subprocess.run([*HW, *args], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    made = yaml.safe_load((tmp_path / "p.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "traces" / "profiles" / "smollm2-135m-cpu.yaml").read_text())
    assert_same_data(made, shipped, "smollm2-135m-cpu.yaml")
