"""`python -m moe2sim.hardware` (or `moe2sim-hw`): collect, fit, serve, live, compare.

Bad input and missing hardware print one line and exit with code 2 (no traceback).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from moe2sim.cli.argtypes import HelpFormatter, at_least, attach_values, number_in, value_flags, whole_in
from moe2sim.hardware.backends import BackendError, HFBackend, OpenAIBackend
from moe2sim.hardware.meters import MeterUnavailable, open_meter
from moe2sim.errors import InputError


def make_backend(spec: str, device: str, threads: int | None = None):
    """hf:<checkpoint folder or shape name> | openai:<base url>[#model]"""
    kind, _, target = spec.partition(":")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if kind == "hf" and target:
        return HFBackend(target, device=device, dtype="bfloat16" if device.startswith("cuda") else "float32")
    if kind == "openai" and target:
        url, _, model = target.partition("#")
        return OpenAIBackend(url, model or "default")
    raise InputError("--backend", spec, "expected hf:<checkpoint or shape> or openai:<url>[#model]")


def make_meter(kind: str):
    return None if kind == "none" else open_meter(kind)


def cmd_collect(args: argparse.Namespace) -> int:
    from moe2sim.hardware.collect import MeasurementPlan, Request, collect, concurrency_levels, queued_note, shape_grid
    from moe2sim.hardware.provenance import describe

    plan = MeasurementPlan(args.reps, args.warmup, args.idle_s, concurrency_levels(args.concurrency), args.in_flight)
    shapes = None if args.scenario else shape_grid(args.shapes)  # bad flags fail before a model loads
    backend = make_backend(args.backend, args.device, args.threads)
    meter = make_meter(args.meter)
    if args.scenario:
        from moe2sim.scenario import load_scenario
        from moe2sim.twin import Twin
        import numpy as np

        twin = Twin.build(load_scenario(args.scenario, [f"queries={args.queries}", "duration_s=null"]))
        batch = next(twin.workload.batches(np.random.default_rng(args.seed)))
        prompts = twin.quality.prompts
        requests = [Request(str(prompts["question"].iloc[p]), int(t), int(o), str(prompts["prompt_id"].iloc[p]))
                    for p, t, o in zip(batch.prompt, batch.prompt_tokens, batch.output_tokens)]
    else:
        requests = shapes
    trace = collect(backend, requests, meter, args.device_name or args.device, plan)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    trace.to_csv(tmp, index=False)
    provenance = out.with_suffix(".device.json")
    provenance_tmp = provenance.with_name(f".{provenance.name}.tmp")
    provenance_tmp.write_text(json.dumps(describe(backend.name, args.device, meter) | {"plan": asdict(plan)},
                                         indent=1) + "\n")
    tmp.replace(out)
    provenance_tmp.replace(provenance)
    warm = trace[trace["warm"]]
    print(f"{len(trace)} requests ({len(warm)} warm) on {backend.name} at concurrency "
          f"{','.join(map(str, plan.concurrency))}, meter {trace['meter'].iloc[0]} -> {out} "
          f"(how it was measured: {provenance.name})")
    note = queued_note(trace)
    if note:
        print(f"hardware: warning: {note}", file=sys.stderr)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from moe2sim.hardware.collect import fit
    from moe2sim.data.tables import DEVICE_TRACE_COLUMNS, read_table
    from moe2sim.devices.profiles import save_profile

    path = Path(args.trace)
    trace = read_table(path, {k: v for k, v in DEVICE_TRACE_COLUMNS.items() if k != "active_energy_J"},
                       "device trace", optional={"warm": "bool"})
    if "active_energy_J" not in trace.columns:
        trace["active_energy_J"] = float("nan")
    described = {k: getattr(args, k) for k in ("model", "notes", "stack", "quantisation", "power_mode", "energy_boundary")
                 if getattr(args, k) is not None}
    profile = fit(trace, path, args.name, args.device_name, args.assume_power, **described)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_profile(profile, out)
    print(f"profile {profile.name}: decode {profile.decode_tokens_per_s.value:.1f} tok/s, prefill "
          f"{profile.prefill_tokens_per_s.value:.0f} tok/s, fit error {profile.fit_error} -> {out}")
    return 0


API_KEY_ENV = "MOE2SIM_API_KEY"


def api_key(args: argparse.Namespace) -> tuple[str | None, str]:
    """The key `serve` requires, and where it came from: --api-key, else --api-key-file (the two exclude each
    other), else the environment variable MOE2SIM_API_KEY; none of them: no key, the server is open."""
    import os

    if args.api_key is not None:
        key, source = args.api_key, "--api-key"
    elif args.api_key_file is not None:
        source = "--api-key-file"
        try:
            key = Path(args.api_key_file).read_text()  # OSError: main() names the file, exit 2
        except UnicodeDecodeError:
            raise InputError(source, args.api_key_file, "not a text file") from None
    elif os.environ.get(API_KEY_ENV):
        key, source = os.environ[API_KEY_ENV], API_KEY_ENV
    else:
        return None, "none"
    key = key.strip()
    if not key or any(c.isspace() or not (c.isascii() and c.isprintable()) for c in key):  # never echoed
        raise InputError(source, args.api_key_file if source == "--api-key-file" else None,
                         "an API key must be one word of printable ASCII characters")
    return key, source


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from moe2sim.hardware.serve import CompletionServer, ExpertServer, Limits, bind

    key, key_source = api_key(args)  # before binding or loading a model: bad input fails at once
    try:  # before loading any model: a taken port fails at once
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise InputError("--port", f"{args.host}:{args.port}", f"cannot listen there ({exc.strerror or exc})") from None
    models = {}
    for item in args.backend:
        name, _, spec = item.partition("=") if "=" in item.split(":", 1)[0] else ("", "", item)
        backend = make_backend(spec, args.device, args.threads)
        name = name or backend.name  # an unnamed backend answers by its own name
        if name in models:
            raise InputError("--backend", item, "give each expert of one server its own name: NAME=hf:... NAME2=...")
        models[name] = backend
    meter = make_meter(args.meter)
    limits = Limits.for_models(models, args.max_body_bytes, args.max_prompt_tokens, args.max_tokens, args.queue)
    experts = ExpertServer(models, meter, args.slots, limits, key)
    server = CompletionServer(experts, args.host, args.port, sock=sock)
    stop = threading.Event()
    caught: list[str] = []

    def on_signal(signum, _frame) -> None:
        caught.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    server.start()
    print(f"serving {', '.join(f'{n}: {b.name}' for n, b in models.items())} on "
          f"http://{args.host}:{server.port} "
          f"(meter {meter.name if meter else 'none: energy not measured'}; slots {args.slots}, queue {limits.queue}, "
          f"max_tokens {limits.max_tokens}, prompt tokens {limits.max_prompt_tokens}; "
          f"API key {'required (from ' + key_source + ')' if key else 'none'})", flush=True)
    if key is None and args.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"hardware: warning: no API key and listening on {args.host}: anyone who reaches the port can use "
              f"this device (--api-key-file or {API_KEY_ENV})", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        if not server.thread.is_alive():
            print("hardware: error: the server stopped unexpectedly", file=sys.stderr)
            return 1
    server.shutdown()
    if meter:
        meter.close()
    print(f"stopped on {caught[0]}: {server.served()} requests served", flush=True)
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    import signal

    from moe2sim.hardware.live import JOURNAL, LiveRun
    from moe2sim.report.live_summary import live_summary
    from moe2sim.report.outputs import OutputDir
    from moe2sim.report.publish import announce, live_results, publish
    from moe2sim.scenario import load_scenario
    from moe2sim.twin import Twin

    scenario = load_scenario(args.scenario, args.set)
    endpoints = dict(item.split("=", 1) for item in args.endpoint if "=" in item)
    missing = [e.name for e in scenario.experts if e.name not in endpoints]
    if missing:
        raise InputError("--endpoint", ",".join(missing), "no endpoint for these experts (give NAME=URL each)")
    bad = [u for u in endpoints.values() if not u.startswith(("http://", "https://"))]
    if bad:
        raise InputError("--endpoint", bad[0], "expected an http:// or https:// URL")
    twin = Twin.build(scenario)
    out = Path(args.out)
    output = OutputDir(out, "--out")
    announce(output, scenario, [JOURNAL])  # nothing of an older run may look current
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM stops the run as Ctrl-C does
        signal.signal(sig, signal.default_int_handler)
    run = LiveRun(twin, endpoints, args.speed, args.retries, args.seed, args.timeout_s, args.connect_timeout,
                  args.read_timeout, args.retry_horizon_s, journal=out)
    queries, legs = run.run()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # writing the results: not to be cut short
    summary = live_summary(twin, run, queries, legs, args.max_failed_fraction)
    publish(output, live_results(scenario, summary, queries, legs, run.attempt_table()))
    fq, fl = summary["failed_queries"], summary["failed_legs"]
    per_expert = ", ".join(f"{n} {v}" for n, v in fl["per_expert"].items() if v)
    stats = (f"accuracy {summary['accuracy']:.3f}, latency mean {summary['latency_s']['mean']:.3f} s over the "
             f"{summary['queries_succeeded']} that succeeded" if summary["queries_succeeded"] else "no query succeeded")
    line = (f"{len(queries)} queries recorded of {run.sent} sent ({run.planned} planned); {fq['total']} failed "
            f"({fl['total']} of {fl['legs']} legs{': ' + per_expert if per_expert else ''}); "
            f"{stats} -> {out}/")
    if run.interrupted:
        print(f"hardware live: interrupted: {line} (summary.json interrupted: true)", file=sys.stderr)
    elif summary["exit_code"] == 3:
        print(f"hardware live: failed legs {100 * fl['fraction']:.1f} % > --max-failed-fraction "
              f"{100 * args.max_failed_fraction:g} %: {line}", file=sys.stderr)
    else:
        print(line)
    return summary["exit_code"]


def cmd_compare(args: argparse.Namespace) -> int:
    from moe2sim.report.compare_table import error_table, failures, failures_note, markdown, read_records
    from moe2sim.report.outputs import OutputDir
    from moe2sim.report.publish import COMPARE_FILES, compare_results, publish

    out = OutputDir(Path(args.out), "--out", args.allow_existing)
    out.check(COMPARE_FILES)
    errors, lost = error_table(args.simulated, args.measured), failures(args.measured)
    publish(out, compare_results(errors, lost, read_records(args.simulated)[0], read_records(args.measured)[0]))
    print(markdown(errors))
    print(failures_note(lost))
    return 0


class Parser(argparse.ArgumentParser):
    """Bad flags: one line naming the flag, exit 2 (as for every other input error)."""

    def error(self, message: str):
        self.exit(2, f"hardware: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from typing import get_args

    from moe2sim.hardware.collect import IN_FLIGHT
    from moe2sim.devices.profiles import EnergyBoundary, Stack

    invoked = Path(sys.argv[0]).name
    parser = Parser(prog=invoked if invoked == "moe2sim-hw" else "python -m moe2sim.hardware", description=__doc__.splitlines()[0],
                    formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(sub.add_parser, formatter_class=HelpFormatter)
    backend = dict(help="hf:<checkpoint folder or shape: mistral-7b, llama-3-8b, llama-3.2-1b, smollm2-135m, tiny-llama> "
                        "or openai:<base url>[#model]")
    meter = dict(default="auto", help="auto | nvml | jetson | rapl | none (none: energy not measured, NaN)")

    p = sub.add_parser("collect", help="measure a backend into a device trace")
    p.add_argument("--backend", required=True, **backend)
    p.add_argument("--device", default="cpu", help="torch device of a local backend (cpu, cuda:0)")
    p.add_argument("--device-name", help="device label written into the trace")
    p.add_argument("--threads", type=at_least(1),
                   help="CPU threads of a local backend (match how it will be served; default: torch's)")
    p.add_argument("--meter", **meter)
    p.add_argument("--shapes", default="64x32,256x64,512x128,1024x64,128x256", help="PROMPTxOUTPUT,...")
    p.add_argument("--scenario", help="instead of --shapes: draw --queries queries of this scenario's workload")
    p.add_argument("--queries", type=whole_in(1, 100_000), default=50,
                   help="queries drawn with --scenario (default 50)")
    p.add_argument("--seed", type=whole_in(0, 2**63 - 1), default=0, help="workload seed (default 0)")
    p.add_argument("--concurrency", default="1",
                   help="levels N,N,...: each request is sent as N equal copies started together, the next only "
                        "when all N have finished (a server needs as many slots as the highest level)")
    p.add_argument("--in-flight", choices=sorted(IN_FLIGHT), default="threads",
                   help="how a level's N requests run together: threads (N concurrent requests, e.g. to a server) "
                        "or batch (one batch of a local hf: backend)")
    p.add_argument("--reps", type=whole_in(1, 10_000), default=3,
                   help="repetitions per shape and level (default 3)")
    p.add_argument("--warmup", type=whole_in(0, 10_000), default=1,
                   help="unmeasured requests first (default 1)")
    p.add_argument("--idle-s", type=number_in(0, 3600), default=2.0,
                   help="seconds of idle power measured before the requests (default 2)")
    p.add_argument("--out", required=True, help="device trace CSV to write")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("fit", help="device trace -> device profile YAML, with its fit error")
    p.add_argument("trace", help="device trace (CSV or Parquet) from collect")
    p.add_argument("--name", required=True, help="profile name")
    p.add_argument("--device-name", required=True, help="device label")
    p.add_argument("--assume-power", type=number_in(0, 1e6),
                   help="W, for traces without energy (labelled assumed; default: the trace's measured energy)")
    p.add_argument("--model", help="what is served, as the profile states it (default: the trace's model column)")
    p.add_argument("--notes", help="free text kept in the profile (default: the number of rows fitted)")
    p.add_argument("--stack", choices=get_args(Stack), help="serving stack the numbers belong to")
    p.add_argument("--quantisation", help="weight format, e.g. bf16, fp32, Q4_K_M")
    p.add_argument("--power-mode", help="device power mode / clocks, e.g. MAXN, default")
    p.add_argument("--energy-boundary", choices=get_args(EnergyBoundary),
                   help="what the powers cover (default: none for a trace without measured energy, else unstated)")
    p.add_argument("--out", required=True, help="profile YAML to write")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("serve", help="experts on one device as an OpenAI-compatible endpoint with metered energy")
    p.add_argument("--backend", required=True, action="append", metavar="[NAME=]SPEC",
                   help=backend["help"] + "; repeat as NAME=SPEC to serve several experts on this device, "
                                          "chosen by the request's model")
    p.add_argument("--device", default="cpu", help="torch device of a local backend (default cpu)")
    p.add_argument("--meter", **meter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=whole_in(0, 65535), default=8000,
                   help="port to listen on; 0: any free port")
    p.add_argument("--slots", type=at_least(1), default=1,
                   help="requests served at once per expert (they share the device's energy)")
    p.add_argument("--queue", type=at_least(0), default=64,
                   help="requests that may wait per expert beyond its slots; more are answered 429 + Retry-After")
    p.add_argument("--max-body-bytes", type=at_least(1024),
                   help="largest request body (413 beyond); default max(1 MiB, 32 B x context)")
    p.add_argument("--max-prompt-tokens", type=at_least(1),
                   help="longest prompt (400 beyond); default the model's context length")
    p.add_argument("--max-tokens", type=at_least(1),
                   help="largest max_tokens (400 beyond); default the model's context length")
    p.add_argument("--threads", type=at_least(1),
                   help="CPU threads of a local backend (default: torch's)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--api-key", metavar="KEY",
                      help="require Authorization: Bearer KEY on every route but /health (401 without it); visible "
                           f"to other users in the process list: prefer --api-key-file or {API_KEY_ENV} "
                           f"(default: --api-key-file, else {API_KEY_ENV}, else none: open)")
    keys.add_argument("--api-key-file", metavar="PATH",
                      help=f"read the key from this file (surrounding whitespace dropped); default: {API_KEY_ENV}, "
                           "else none")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("live", help="run a scenario's policy against real endpoints in real time")
    p.add_argument("scenario")
    p.add_argument("--endpoint", action="append", default=[], metavar="EXPERT=URL", required=True,
                   help="an expert's server (hardware serve) as NAME=http://host:port; one per expert")
    p.add_argument("--speed", type=number_in(1e-6), default=1.0, help="arrivals this many times faster than the scenario's")
    p.add_argument("--retries", type=at_least(0),
                   help="most retries per leg (default: as many as fit in --retry-horizon-s)")
    p.add_argument("--retry-horizon-s", type=number_in(0), default=30.0,
                   help="retry a failing leg with exponential backoff (0.25 s doubling, at most 4 s) while the next "
                        "attempt would start within this many seconds of its first (default 30)")
    p.add_argument("--connect-timeout", type=number_in(0.001), default=5.0,
                   help="seconds to connect to an endpoint (default 5)")
    p.add_argument("--read-timeout", type=number_in(0.001), default=60.0,
                   help="seconds to wait for the next data of an answer, the first token included (default 60)")
    p.add_argument("--timeout-s", type=number_in(0.001), default=300.0,
                   help="seconds for a whole attempt (default 300)")
    p.add_argument("--max-failed-fraction", type=number_in(0, 1), default=0.0,
                   help="exit with code 3 when more than this fraction of legs failed after their retries "
                        "(default 0: any failed leg)")
    p.add_argument("--seed", type=whole_in(0, 2**63 - 1), help="override the scenario seed (default: the scenario's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a scenario field")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_live)

    p = sub.add_parser("compare", help="simulated vs measured records -> error table and plots")
    p.add_argument("simulated", help="folder of a simulated run (moe2sim run)")
    p.add_argument("measured", help="folder of a live run (hardware live)")
    p.add_argument("--out", required=True, help="output folder (compare.csv, compare.json, report.html)")
    p.add_argument("--allow-existing", action="store_true",
                   help="write into a non-empty folder moe2sim did not write (its files are never overwritten)")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(attach_values(list(sys.argv[1:] if argv is None else argv), value_flags(parser)))
    try:
        return args.func(args)
    except (InputError, MeterUnavailable, BackendError) as exc:
        print(f"hardware: error: {exc}", file=sys.stderr)
    except OSError as exc:  # a path the user gave that the OS refuses
        print(f"hardware: error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
              file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
