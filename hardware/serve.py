"""`hardware serve`: experts as an OpenAI-compatible endpoint (POST /v1/completions, streaming or
not; GET /health), each wrapping a local backend or an upstream server, adding to every response an
`x_moe2sim` object: ttft_s, decode_s, queue_s (waiting for a free slot), prompt/output tokens, and
the request's energy from the device's meter (energy_J, energy_resolution_J, energy_method). With
`--meter none` the energy fields are null: never zero. Requests served at once (`--slots` > 1)
share the device's energy (hardware/attribution.py): it is never counted twice.

One server is one device. It may hold several experts (models), chosen by the request's `model`
field; each has its own `slots` (its own FIFO queue, as in the simulator) and all share the device's
meter, so experts on one GPU split its energy instead of each metering all of it.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hardware.attribution import SharedDevice
from hardware.backends import Backend, BackendError
from hardware.meters import SampledCounter


class ExpertServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], models: dict[str, Backend], meter: SampledCounter | None,
                 slots: int = 1):
        super().__init__(address, CompletionHandler)
        self.models, self.meter = models, meter
        self.device = SharedDevice(meter) if meter else None
        self.slots = {name: threading.Semaphore(slots) for name in models}
        self.served = 0

    def model_for(self, requested: object) -> str | None:
        """The expert a request asks for; with one expert, any name reaches it (clients send "default")."""
        if len(self.models) == 1:
            return next(iter(self.models))
        return requested if isinstance(requested, str) and requested in self.models else None


class CompletionHandler(BaseHTTPRequestHandler):
    server: ExpertServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise
        return

    def _json(self, code: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            meter = self.server.meter.name if self.server.meter else None
            self._json(200, {"status": "ok", "models": {n: b.name for n, b in self.server.models.items()},
                             "meter": meter, "served": self.server.served})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        if self.path != "/v1/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            prompt = str(req.get("prompt", ""))
            max_tokens = int(req.get("max_tokens", 16))
            prompt_tokens = int(req.get("x_prompt_tokens", max(1, len(prompt) // 4)))
            if max_tokens < 1 or prompt_tokens < 1:
                raise ValueError("max_tokens and the prompt length must be at least 1")
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": {"message": f"bad request: {exc}"}})
            return
        model = self.server.model_for(req.get("model"))
        if model is None:
            self._json(404, {"error": {"message": f"model {req.get('model')!r} is not served here "
                                                  f"(models: {', '.join(self.server.models)})"}})
            return
        backend = self.server.models[model]
        stream = bool(req.get("stream", False))
        arrived = time.perf_counter()
        with self.server.slots[model]:
            queue_s = time.perf_counter() - arrived
            if stream:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
            device = self.server.device
            span = device.begin() if device else None
            answered = False
            try:
                gen = backend.generate(prompt, prompt_tokens, max_tokens,
                                                   on_token=self._send_token if stream else None)
                answered = True
            except BackendError as exc:
                if stream:
                    self._event({"error": {"message": str(exc)}})
                else:
                    self._json(502, {"error": {"message": str(exc)}})
                return
            finally:  # whatever happened (client gone too), the request no longer runs on the device
                if device:
                    device.stop(span, read=answered)
        extra = {"model": model, "ttft_s": gen.ttft_s, "decode_s": gen.decode_s, "queue_s": queue_s,
                 "prompt_tokens": gen.prompt_tokens, "output_tokens": gen.output_tokens,
                 "energy_J": None, "energy_resolution_J": None, "energy_method": "none"}
        if device:
            m = device.energy(span)
            extra.update(energy_J=m.energy_J, energy_resolution_J=m.resolution_J, energy_method=m.method)
        self.server.served += 1
        usage = {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.output_tokens}
        if stream:
            self._event({"choices": [{"text": "", "index": 0, "finish_reason": "length"}], "usage": usage,
                         "x_moe2sim": extra})
            self.wfile.write(b"data: [DONE]\n\n")
        else:
            self._json(200, {"object": "text_completion", "model": backend.name,
                             "choices": [{"text": gen.text, "index": 0, "finish_reason": "length"}],
                             "usage": usage, "x_moe2sim": extra})

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _send_token(self, text: str) -> None:
        self._event({"choices": [{"text": text, "index": 0, "finish_reason": None}]})


def serve(models: Backend | dict[str, Backend], meter: SampledCounter | None, host: str, port: int,
          slots: int = 1) -> ExpertServer:
    """Start serving one backend, or several by expert name, in a background thread; returns the
    server (call shutdown() to stop)."""
    server = ExpertServer((host, port), models if isinstance(models, dict) else {"default": models}, meter, slots)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
