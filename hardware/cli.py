"""`python -m hardware` (or `moe2sim-hw`): collect, fit, serve, live, compare.

Bad input and missing hardware print one line and exit with code 2 (no traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hardware.backends import BackendError, HFBackend, OpenAIBackend
from hardware.meters import MeterUnavailable, open_meter
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
    from hardware.collect import Request, collect, shape_grid
    from hardware.provenance import describe

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
        requests = shape_grid(args.shapes)
    trace = collect(backend, requests, meter, args.device_name or args.device, args.reps, args.warmup, args.idle_s)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    trace.to_csv(tmp, index=False)
    provenance = out.with_suffix(".device.json")
    provenance_tmp = provenance.with_name(f".{provenance.name}.tmp")
    provenance_tmp.write_text(json.dumps(describe(backend.name, args.device, meter), indent=1) + "\n")
    tmp.replace(out)
    provenance_tmp.replace(provenance)
    warm = trace[trace["warm"]]
    print(f"{len(trace)} requests ({len(warm)} warm) on {backend.name}, meter {trace['meter'].iloc[0]} -> {out} "
          f"(how it was measured: {provenance.name})")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from hardware.collect import fit
    from moe2sim.devices.profiles import save_profile
    from moe2sim.data.tables import DEVICE_TRACE_COLUMNS, read_table

    path = Path(args.trace)
    trace = read_table(path, {k: v for k, v in DEVICE_TRACE_COLUMNS.items() if k != "active_energy_J"},
                       "device trace", optional={"warm": "bool"})
    if "active_energy_J" not in trace.columns:
        trace["active_energy_J"] = float("nan")
    profile = fit(trace, path, args.name, args.device_name, args.assume_power)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_profile(profile, out)
    print(f"profile {profile.name}: decode {profile.decode_tokens_per_s.value:.1f} tok/s, prefill "
          f"{profile.prefill_tokens_per_s.value:.0f} tok/s, fit error {profile.fit_error} -> {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hardware.serve import serve

    models = {}
    for item in args.backend:
        name, _, spec = item.partition("=") if "=" in item.split(":", 1)[0] else ("default", "", item)
        if not name or name in models:
            raise InputError("--backend", item, "give each expert of one server its own name: NAME=hf:... NAME2=...")
        models[name] = make_backend(spec, args.device, args.threads)
    meter = make_meter(args.meter)
    server = serve(models, meter, args.host, args.port, args.slots)
    print(f"serving {', '.join(f'{n}: {b.name}' for n, b in models.items())} on "
          f"http://{args.host}:{server.server_address[1]} "
          f"(meter {meter.name if meter else 'none: energy not measured'})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from hardware.live import run_live
    from moe2sim.experiments.run import twin_summary, write_results
    from moe2sim.experiments.outputs import OutputDir
    from moe2sim.scenario import load_scenario
    from moe2sim.twin import Twin

    scenario = load_scenario(args.scenario, args.set)
    endpoints = dict(item.split("=", 1) for item in args.endpoint if "=" in item)
    missing = [e.name for e in scenario.experts if e.name not in endpoints]
    if missing:
        raise InputError("--endpoint", ",".join(missing), "no endpoint for these experts (give NAME=URL each)")
    twin = Twin.build(scenario)
    queries, legs = run_live(twin, endpoints, args.speed, args.retries, args.seed)
    out = Path(args.out)
    summary = twin_summary(twin, queries, legs, float(queries["finish_s"].max()))
    summary["errors"] = int((queries["error"] != "").sum())
    with OutputDir(out, allow_existing=True).staged() as stage:
        write_results(stage, scenario, f"hardware live: {scenario.name}", queries, legs, summary)
    print(f"{len(queries)} queries live ({summary['errors']} with errors), accuracy {summary['accuracy']:.3f}, "
          f"latency mean {summary['latency_s']['mean']:.3f} s -> {out}/")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import base64
    import io

    from hardware.compare import cdf_plot, error_table, markdown

    table = error_table(args.simulated, args.measured)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    (out / "compare.json").write_text(json.dumps(table.to_dict(orient="records"), indent=2, default=float))
    buf = io.BytesIO()
    cdf_plot(args.simulated, args.measured).savefig(buf, format="png", dpi=100, bbox_inches="tight")
    md = markdown(table)
    (out / "report.html").write_text(
        f"<html><body><h1>Simulated vs measured</h1><pre>{md}</pre>"
        f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"></body></html>')
    print(md)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hardware", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    backend = dict(help="hf:<checkpoint folder or shape: mistral-7b, llama-3-8b, llama-3.2-1b, smollm2-135m, tiny-llama> "
                        "or openai:<base url>[#model]")
    meter = dict(default="auto", help="auto | nvml | jetson | rapl | none (none: energy not measured, NaN)")

    p = sub.add_parser("collect", help="measure a backend into a device trace")
    p.add_argument("--backend", required=True, **backend)
    p.add_argument("--device", default="cpu", help="torch device of a local backend (cpu, cuda:0)")
    p.add_argument("--device-name", help="device label written into the trace")
    p.add_argument("--threads", type=int, help="CPU threads of a local backend (match how it will be served)")
    p.add_argument("--meter", **meter)
    p.add_argument("--shapes", default="64x32,256x64,512x128,1024x64,128x256", help="PROMPTxOUTPUT,...")
    p.add_argument("--scenario", help="instead of --shapes: draw --queries queries of this scenario's workload")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--idle-s", type=float, default=2.0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("fit", help="device trace -> device profile YAML, with its fit error")
    p.add_argument("trace")
    p.add_argument("--name", required=True)
    p.add_argument("--device-name", required=True)
    p.add_argument("--assume-power", type=float, help="W, for traces without energy (labelled assumed)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("serve", help="experts on one device as an OpenAI-compatible endpoint with metered energy")
    p.add_argument("--backend", required=True, action="append", metavar="[NAME=]SPEC",
                   help=backend["help"] + "; repeat as NAME=SPEC to serve several experts on this device, "
                                          "chosen by the request's model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--meter", **meter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--slots", type=int, default=1)
    p.add_argument("--threads", type=int, help="CPU threads of a local backend")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("live", help="run a scenario's policy against real endpoints in real time")
    p.add_argument("scenario")
    p.add_argument("--endpoint", action="append", default=[], metavar="EXPERT=URL", required=True)
    p.add_argument("--speed", type=float, default=1.0, help="arrivals this many times faster than the scenario's")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_live)

    p = sub.add_parser("compare", help="simulated vs measured records -> error table and plots")
    p.add_argument("simulated")
    p.add_argument("measured")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, MeterUnavailable, BackendError) as exc:
        print(f"hardware: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
