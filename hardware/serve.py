"""`hardware serve`: experts as an OpenAI-compatible endpoint on an ASGI stack (FastAPI + uvicorn).

Routes: POST /v1/completions and /v1/chat/completions (streaming as server-sent events ending with
`data: [DONE]`, or not), GET /v1/models, GET /health. Every answer carries an `x_moe2sim` object:
ttft_s, decode_s, queue_s (waiting for a free slot), prompt/output tokens, and the request's energy
from the device's meter (energy_J, energy_resolution_J, energy_method). Without a meter the energy
fields are null, never zero, and `energy_reason` says why. Requests served at once (`--slots` > 1)
share the device's energy (hardware/attribution.py): it is never counted twice.

One server is one device. It may hold several experts (models), chosen by the request's `model`
field; each has its own `slots` (its own FIFO queue, as in the simulator) and all share the device's
meter, so experts on one GPU split its energy instead of each metering all of it.

Limits (each answered with a JSON error, never a traceback): request bodies are validated by
pydantic models (422; not JSON: 400); bodies over `max_body_bytes` are 413; prompts over
`max_prompt_tokens`, `max_tokens` over its limit, or both together over the model's context are 400
(defaults from the model's context length, e.g. `max_position_embeddings`); an expert whose queue
already holds `queue` waiting requests answers 429 with Retry-After. Generation runs in a worker
thread per slot (the torch backends block) so the event loop stays responsive; it checks between
tokens whether the client is still there and stops, freeing its slot, when it has gone.
"""
from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moe2sim.hardware.attribution import SharedDevice
from moe2sim.hardware.backends import Backend, BackendError
from moe2sim.hardware.meters import SampledCounter

FALLBACK_CONTEXT = 32768  # tokens, for a backend that does not say its context (an upstream server)
NO_METER = "no energy meter on this server (--meter none): energy not measured"


class Cancelled(Exception):
    """The client went away: generation stops between two tokens."""


@dataclass
class Limits:
    max_body_bytes: int
    max_prompt_tokens: int
    max_tokens: int
    context: int | None  # prompt + output tokens may not exceed it (None: not checked)
    queue: int           # requests waiting per expert beyond its slots; more get 429

    @classmethod
    def for_models(cls, models: dict[str, Backend], max_body_bytes: int | None = None,
                   max_prompt_tokens: int | None = None, max_tokens: int | None = None,
                   queue: int | None = None) -> "Limits":
        """Defaults from the smallest context of the served models (their max_position_embeddings)."""
        contexts = [c for c in (getattr(b, "context_length", None) for b in models.values()) if c]
        context = min(contexts) if contexts else None
        window = context or FALLBACK_CONTEXT
        return cls(max_body_bytes=max_body_bytes or max(1 << 20, 32 * window),
                   max_prompt_tokens=max_prompt_tokens or window, max_tokens=max_tokens or window,
                   context=context, queue=64 if queue is None else queue)


def _models():
    """The request bodies."""
    class Common(BaseModel):
        model_config = ConfigDict(extra="allow")  # temperature, ignore_eos, ...: accepted, greedy anyway
        model: str | None = None
        max_tokens: int = Field(16, ge=1)
        stream: bool = False
        x_prompt_tokens: int | None = Field(None, ge=1, description="prompt length in tokens, for token-less shapes")

    class CompletionRequest(Common):
        prompt: str | list[str]

    class Message(BaseModel):
        role: str
        content: str

    class ChatRequest(Common):
        messages: list[Message] = Field(min_length=1)

    return CompletionRequest, ChatRequest


@dataclass
class Expert:
    name: str
    backend: Backend
    slots: int
    sem: asyncio.Semaphore | None = None
    waiting: int = 0
    running: int = 0
    served: int = 0
    cancelled: int = 0
    rejected: int = 0
    service_s: float = 1.0  # running mean of service times, for Retry-After
    pool: Any = None


@dataclass
class Job:
    prompt: str
    prompt_tokens: int
    max_tokens: int
    cancel: threading.Event = field(default_factory=threading.Event)
    on_text: Callable[[str], None] | None = None


def _error(code: int, message: str, kind: str, headers: dict[str, str] | None = None):
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=code,
                        headers=headers)


class HTTPProblem(Exception):
    def __init__(self, code: int, message: str, kind: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.message, self.kind, self.headers = code, message, kind, headers


def create_app(models: Backend | dict[str, Backend], meter: SampledCounter | None, slots: int = 1,
               limits: Limits | None = None):
    """The ASGI app serving `models` (one backend, or several by expert name) on one metered device."""
    if slots < 1:
        raise ValueError("slots must be at least 1")
    models = models if isinstance(models, dict) else {"default": models}
    limits = limits or Limits.for_models(models)
    CompletionRequest, ChatRequest = _models()
    device = SharedDevice(meter) if meter else None
    experts = {n: Expert(n, b, slots, pool=ThreadPoolExecutor(slots, thread_name_prefix=f"gen-{n}"))
               for n, b in models.items()}
    @asynccontextmanager
    async def lifespan(_):
        yield
        for e in experts.values():  # stop what still generates: threads end at their next token
            e.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="moe2sim hardware serve", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.experts, app.state.limits, app.state.meter = experts, limits, meter

    @app.exception_handler(HTTPProblem)
    async def problem(_: Request, exc: HTTPProblem):
        return _error(exc.code, exc.message, exc.kind, exc.headers)

    @app.exception_handler(404)
    async def no_route(request: Request, _: Exception):
        return _error(404, f"no route {request.method} {request.url.path}", "not_found")

    @app.exception_handler(405)
    async def bad_method(request: Request, _: Exception):
        return _error(405, f"{request.method} is not allowed on {request.url.path}", "method_not_allowed")

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception):
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": {n: e.backend.name for n, e in experts.items()},
                "meter": meter.name if meter else None, "served": sum(e.served for e in experts.values()),
                "experts": {n: {"slots": e.slots, "running": e.running, "waiting": e.waiting, "served": e.served,
                                "cancelled": e.cancelled, "rejected": e.rejected} for n, e in experts.items()},
                "limits": limits.__dict__}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [
            {"id": n, "object": "model", "owned_by": "moe2sim", "root": e.backend.name,
             "max_model_len": getattr(e.backend, "context_length", None)} for n, e in experts.items()]}

    async def read_body(request: Request, schema):
        chunks, size = [], 0
        declared = request.headers.get("content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                too_big = True
            if too_big:  # read and drop the rest (closing on a client still sending resets its connection)
                if size > max(64 << 20, 8 * limits.max_body_bytes):
                    break
                continue
            chunks.append(chunk)
        if too_big:
            raise HTTPProblem(413, f"request body of {declared or f'over {size}'} bytes exceeds the limit of "
                                   f"{limits.max_body_bytes} bytes (--max-body-bytes)", "request_too_large")
        raw = b"".join(chunks)
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPProblem(400, f"the body is not JSON ({exc})", "invalid_request_error") from None
        if not isinstance(data, dict):
            kind = {list: "a list", str: "a string", type(None): "null"}.get(type(data), type(data).__name__)
            raise HTTPProblem(422, f"the body must be a JSON object, not {kind}",
                              "invalid_request_error")
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise HTTPProblem(422, f"invalid request: {detail}", "invalid_request_error") from None

    def pick(requested: object) -> Expert:
        if len(experts) == 1:  # with one expert, any name reaches it (clients send "default")
            return next(iter(experts.values()))
        if isinstance(requested, str) and requested in experts:
            return experts[requested]
        raise HTTPProblem(404, f"model {requested!r} is not served here (models: {', '.join(experts)})",
                          "model_not_found")

    async def admit(req, prompt: str) -> tuple[Expert, Job]:
        expert = pick(req.model)
        if req.max_tokens > limits.max_tokens:
            raise HTTPProblem(400, f"max_tokens {req.max_tokens} exceeds the limit of {limits.max_tokens} "
                                   f"(--max-tokens)", "invalid_request_error")
        hint = req.x_prompt_tokens or max(1, len(prompt) // 4)
        counter = getattr(expert.backend, "prompt_length", None)
        n = await asyncio.to_thread(counter, prompt, hint) if counter else hint
        if n > limits.max_prompt_tokens:
            raise HTTPProblem(400, f"the prompt has {n} tokens, over the limit of {limits.max_prompt_tokens} "
                                   f"(--max-prompt-tokens)", "invalid_request_error")
        if limits.context and n + req.max_tokens > limits.context:
            raise HTTPProblem(400, f"prompt ({n}) + max_tokens ({req.max_tokens}) tokens exceed the model's "
                                   f"context of {limits.context}", "invalid_request_error")
        if expert.waiting + expert.running >= expert.slots + limits.queue:
            expert.rejected += 1
            retry = max(1, math.ceil(expert.service_s * (expert.waiting + 1) / expert.slots))
            raise HTTPProblem(429, f"expert {expert.name!r} is busy: {expert.waiting} requests wait for its "
                                   f"{expert.slots} slot(s) (--queue {limits.queue}); retry after {retry} s",
                              "rate_limit_exceeded", {"Retry-After": str(retry)})
        return expert, Job(prompt, n, req.max_tokens)

    async def wait_slot(expert: Expert, gone: Callable[[], Any] | None) -> bool:
        """Queue for a slot (FIFO); False if the client left meanwhile."""
        if expert.sem is None:
            expert.sem = asyncio.Semaphore(expert.slots)
        expert.waiting += 1
        acquire = asyncio.ensure_future(expert.sem.acquire())
        try:
            while True:
                done, _ = await asyncio.wait({acquire}, timeout=0.1)
                if done:
                    expert.running += 1  # counted from here: generate() gives the slot back
                    return True
                if gone is not None and await gone():
                    acquire.cancel()
                    try:
                        await acquire
                        expert.sem.release()  # acquired just before the cancel
                    except asyncio.CancelledError:
                        pass
                    expert.cancelled += 1
                    return False
        except asyncio.CancelledError:
            if not acquire.cancel() and not acquire.cancelled():
                expert.sem.release()
            raise
        finally:
            expert.waiting -= 1

    def work(expert: Expert, job: Job, arrived: float) -> dict[str, Any]:
        """In a worker thread: generate, stopping between tokens if the client has gone."""
        queue_s = time.perf_counter() - arrived
        span = device.begin() if device else None
        answered = False

        def on_token(text: str) -> None:
            if job.cancel.is_set():
                raise Cancelled()
            if job.on_text:
                job.on_text(text)

        try:
            gen = expert.backend.generate(job.prompt, job.prompt_tokens, job.max_tokens, on_token=on_token)
            answered = True
        finally:  # whatever happened (client gone too), the request no longer runs on the device
            if device:
                device.stop(span, read=answered)
        return {"gen": gen, "queue_s": queue_s, "span": span}

    async def generate(expert: Expert, job: Job, arrived: float) -> dict[str, Any]:
        """Run the job on a slot (held by the caller); energy is read after the slot is freed."""
        try:
            fut = asyncio.get_running_loop().run_in_executor(expert.pool, work, expert, job, arrived)
            try:
                out = await asyncio.shield(fut)
            except asyncio.CancelledError:
                job.cancel.set()  # the thread stops at its next token
                raise
        finally:
            expert.running -= 1
            expert.sem.release()
        gen = out["gen"]
        expert.served += 1
        expert.service_s = 0.8 * expert.service_s + 0.2 * (gen.ttft_s + gen.decode_s)
        extra = {"model": expert.name, "ttft_s": gen.ttft_s, "decode_s": gen.decode_s, "queue_s": out["queue_s"],
                 "prompt_tokens": gen.prompt_tokens, "output_tokens": gen.output_tokens,
                 "energy_J": None, "energy_resolution_J": None, "energy_method": "none", "energy_reason": NO_METER}
        if device:
            m = await asyncio.to_thread(device.energy, out["span"])
            extra.update(energy_J=m.energy_J, energy_resolution_J=m.resolution_J, energy_method=m.method,
                         energy_reason=None)
        return {"gen": gen, "extra": extra}

    def backend_problem(exc: BackendError) -> HTTPProblem:
        return HTTPProblem(502 if exc.retryable else 500, str(exc), "backend_error")

    async def complete(request: Request, chat: bool):
        arrived = time.perf_counter()
        req = await read_body(request, ChatRequest if chat else CompletionRequest)
        if chat:
            prompt = "\n".join(f"{m.role}: {m.content}" for m in req.messages)
        elif isinstance(req.prompt, list):
            if len(req.prompt) != 1:
                raise HTTPProblem(422, "invalid request: prompt: give one prompt (a string or a list of one)",
                                  "invalid_request_error")
            prompt = req.prompt[0]
        else:
            prompt = req.prompt
        expert, job = await admit(req, prompt)
        created, rid = int(time.time()), f"{'chatcmpl' if chat else 'cmpl'}-{time.perf_counter_ns():x}"
        obj = "chat.completion" if chat else "text_completion"

        def choice(text: str, finish: str | None, delta: bool) -> dict[str, Any]:
            if not chat:
                return {"text": text, "index": 0, "finish_reason": finish}
            body = {"role": "assistant", "content": text}
            return {"index": 0, ("delta" if delta else "message"): body, "finish_reason": finish}

        if not req.stream:
            if not await wait_slot(expert, request.is_disconnected):
                return JSONResponse({"error": {"message": "client gone", "code": 499}}, status_code=499)
            task = asyncio.ensure_future(generate(expert, job, arrived))
            while True:  # watch the client while the worker generates
                done, _ = await asyncio.wait({task}, timeout=0.1)
                if done:
                    break
                if await request.is_disconnected():
                    job.cancel.set()
                    expert.cancelled += 1
                    try:
                        await task
                    except (Cancelled, BackendError):
                        pass
                    return JSONResponse({"error": {"message": "client gone", "code": 499}}, status_code=499)
            try:
                out = task.result()
            except BackendError as exc:
                raise backend_problem(exc) from None
            gen = out["gen"]
            return {"id": rid, "object": obj, "created": created, "model": expert.backend.name,
                    "choices": [choice(gen.text, "length", False)],
                    "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.output_tokens,
                              "total_tokens": gen.prompt_tokens + gen.output_tokens},
                    "x_moe2sim": out["extra"]}

        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[str | None] = asyncio.Queue()
        job.on_text = lambda text: loop.call_soon_threadsafe(tokens.put_nowait, text)
        expert.waiting += 1  # reserve the place in the queue now (the response starts below)

        def event(payload: dict[str, Any]) -> str:
            return f"data: {json.dumps(payload, allow_nan=False)}\n\n"

        async def sse():
            expert.waiting -= 1
            if not await wait_slot(expert, None):  # a gone client cancels this generator instead
                return
            task = asyncio.ensure_future(generate(expert, job, arrived))
            task.add_done_callback(lambda t: (tokens.put_nowait(None), t.cancelled() or t.exception()))
            chunk = {"id": rid, "object": f"{obj}.chunk" if chat else obj, "created": created,
                     "model": expert.backend.name}
            try:
                while (text := await tokens.get()) is not None:
                    yield event({**chunk, "choices": [choice(text, None, True)]})
                while not tokens.empty():
                    text = tokens.get_nowait()
                    if text is not None:
                        yield event({**chunk, "choices": [choice(text, None, True)]})
                try:
                    out = await task
                except (BackendError, Cancelled) as exc:  # no [DONE]: the client sees a failed stream
                    yield event({"error": {"message": str(exc) or "cancelled", "type": "backend_error"}})
                    return
                gen = out["gen"]
                yield event({**chunk, "choices": [choice("", "length", True)],
                             "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.output_tokens,
                                       "total_tokens": gen.prompt_tokens + gen.output_tokens},
                             "x_moe2sim": out["extra"]})
                yield "data: [DONE]\n\n"
            finally:
                if not task.done():  # the client went away mid-stream
                    job.cancel.set()
                    expert.cancelled += 1

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    return app


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket (port 0: any free port); OSError (port in use, bad host) is the caller's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class CompletionServer:
    """uvicorn serving the app on a bound socket, in a background thread (signals stay with the
    caller's main thread); `port` is the bound port, `shutdown()` stops it and waits."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, backlog: int = 2048,
                 graceful_s: float = 3.0, sock: socket.socket | None = None):
        import uvicorn

        self.app, self.sock = app, sock or bind(host, port, backlog)
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, http="h11", loop="asyncio", lifespan="on", log_level="warning",
                                access_log=False, backlog=backlog, timeout_graceful_shutdown=graceful_s,
                                timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"serve-{self.port}")

    @property
    def server_address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "CompletionServer":
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        for e in self.app.state.experts.values():  # stop whatever still generates
            e.pool.shutdown(wait=False, cancel_futures=True)
        self.thread.join(timeout_s)
        self.sock.close()

    def served(self) -> int:
        return sum(e.served for e in self.app.state.experts.values())


def serve(models: Backend | dict[str, Backend], meter: SampledCounter | None, host: str, port: int,
          slots: int = 1, limits: Limits | None = None) -> CompletionServer:
    """Start serving one backend, or several by expert name, in a background thread; returns the
    server (call shutdown() to stop)."""
    return CompletionServer(create_app(models, meter, slots, limits), host, port).start()
