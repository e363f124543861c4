"""`hardware serve`: experts as an OpenAI-compatible endpoint on an ASGI stack (FastAPI + uvicorn).

Routes: POST /v1/completions and /v1/chat/completions (streaming as server-sent events ending with
`data: [DONE]`, or not), GET /v1/models, GET /health. Every answer carries an `x_moe2sim` object:
ttft_s, decode_s, queue_s (waiting for a free slot), prompt/output tokens, and the request's energy
from the device's meter (energy_J, energy_resolution_J, energy_method). Without a meter the energy
fields are null, never zero, and `energy_reason` says why. Requests served at once (`--slots` > 1)
share the device's energy (hardware/attribution.py): it is never counted twice.

One server is one device (ExpertServer). It may hold several models (ServedModel), chosen by the
request's `model` field; each has its own `slots` (its own FIFO queue, as in the simulator) and all
share the device's meter, so models on one GPU split its energy instead of each metering all of it.
A model's id, in /v1/models and in every answer's `model`, is its expert name (NAME=SPEC), or the
backend's own name when the server holds one unnamed backend.

Limits (each answered with a JSON error, never a traceback): request bodies are validated by
pydantic models (422; not JSON: 400); bodies over `max_body_bytes` are 413; prompts over
`max_prompt_tokens`, `max_tokens` (or `max_completion_tokens`) over its limit, or both together over
the model's context are 400 (defaults from the model's context length, e.g. `max_position_embeddings`);
a model whose queue already holds `queue` waiting requests answers 429 with Retry-After
(ServiceEstimate). With an API key, every route but /health needs `Authorization: Bearer <key>` (401
otherwise), as vLLM's `--api-key` does. Generation runs in a worker thread per slot (the torch
backends block) so the event loop stays responsive; it checks between tokens whether the client is
still there and stops, freeing its slot, when it has gone.

Counters (/health): every POST to a completion route is `received`; it is `invalid` (4xx before it
queues), or a model's `rejected` (429), or `admitted`; an admitted request ends `served`, `failed`
(backend error) or `cancelled` (its client left, queued or generating), unless still `waiting` or
`running`. So received = invalid + Σ (rejected + admitted) and admitted = served + failed + cancelled
+ waiting + running at every instant.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers

from moe2sim.hardware.attribution import EnergyShares, Share, Span
from moe2sim.hardware.backends import Backend, BackendError, Generation
from moe2sim.hardware.meters import SampledCounter

FALLBACK_CONTEXT = 32768  # tokens, for a backend that does not say its context (an upstream server)
NO_METER = "no energy meter on this server (--meter none): energy not measured"
POLL_S = 0.1  # how often a queued or generating request checks that its client is still there
PUBLIC_PATHS = ("/health",)  # open without the API key, as vLLM's /health is


class Cancelled(Exception):
    """The client went away: the request leaves the queue, or generation stops between two tokens."""


class HTTPProblem(Exception):
    """An OpenAI-style error answer: {"error": {"message", "type", "code"}} with HTTP status `code`."""

    def __init__(self, code: int, message: str, kind: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.message, self.kind, self.headers = code, message, kind, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "code": self.code}},
                            status_code=self.code, headers=self.headers)


@dataclass
class Limits:
    max_body_bytes: int
    max_prompt_tokens: int
    max_tokens: int
    context: int | None  # prompt + output tokens may not exceed it (None: not checked)
    queue: int           # requests waiting per model beyond its slots; more get 429

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


# The request bodies (OpenAI's; unknown fields such as temperature are accepted: decoding is greedy anyway).
class CommonRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int = Field(16, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="the newer name of max_tokens; wins if both")
    stream: bool = False
    x_prompt_tokens: int | None = Field(None, ge=1, description="prompt length in tokens, for token-less shapes")

    @property
    def output_tokens(self) -> tuple[int, str]:
        """How many tokens to generate, and the field that said so."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


class CompletionRequest(CommonRequest):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise HTTPProblem(422, "invalid request: prompt: give one prompt (a string or a list of one)",
                              "invalid_request_error")
        return self.prompt[0]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: str
    content: str | list[TextPart]

    def text(self) -> str:
        """The content; a list of text parts is joined by newlines (as vLLM joins them)."""
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class ChatRequest(CommonRequest):
    messages: list[ChatMessage] = Field(min_length=1)

    def text(self) -> str:
        return "\n".join(f"{m.role}: {m.text()}" for m in self.messages)


@dataclass
class ServiceEstimate:
    """Seconds a request of n output tokens holds a slot: S(n) = first_s + token_s · (n − 1).

    The prior is the model's speed measured at start (one generation of PROBE_TOKENS tokens from a prompt of as
    many, after a short one that warms the model up), or `assumed` where that fails. Each served request of n tokens
    updates first_s with its ttft_s and token_s with decode_s / (n − 1) as an exponentially weighted mean,
    x ← (1 − w) x + w x_obs with w = max(1 / (k + 1), 0.2) for its k-th observation: the prior weighs as
    one observation, the first answers move the estimate at once, and later it tracks drift with weight 0.2.
    """

    first_s: float
    token_s: float
    source: str
    observed: int = 0

    PROBE_TOKENS = 8
    ASSUMED = (1.0, 0.1)  # s, s/token: only where the model could not be timed at start

    @classmethod
    def measure(cls, backend: Backend) -> "ServiceEstimate":
        n = cls.PROBE_TOKENS
        try:
            backend.generate("", n, 2)
            gen = backend.generate("", n, n)
        except (BackendError, Cancelled) as exc:
            return cls(*cls.ASSUMED, source=f"assumed: the model could not be timed at start ({exc})")
        return cls(gen.ttft_s, gen.decode_s / max(1, gen.output_tokens - 1),
                   source=f"measured at start: a {n}-token prompt, {n} output tokens")

    def observe(self, gen: Generation) -> None:
        self.observed += 1
        w = max(1 / (self.observed + 1), 0.2)
        self.first_s += w * (gen.ttft_s - self.first_s)
        if gen.output_tokens > 1:
            self.token_s += w * (gen.decode_s / (gen.output_tokens - 1) - self.token_s)

    def seconds(self, requests: int, tokens: int) -> float:
        """Service time of `requests` requests of `tokens` output tokens in all."""
        return requests * self.first_s + max(0, tokens - requests) * self.token_s


@dataclass(eq=False)
class GenerationJob:
    """One admitted request: what to generate, a flag that stops it between tokens, and who hears the tokens."""

    prompt: str
    prompt_tokens: int
    max_tokens: int
    cancel: threading.Event = field(default_factory=threading.Event)
    on_text: Callable[[str], None] | None = None


@dataclass
class Answer:
    gen: Generation
    extra: dict[str, Any]  # the x_moe2sim object


@dataclass(eq=False)
class ServedModel:
    """A backend behind its own slots and FIFO queue, with its counters and service-time estimate."""

    name: str
    backend: Backend
    slots: int
    estimate: ServiceEstimate
    pool: ThreadPoolExecutor
    sem: asyncio.Semaphore
    waiting: int = 0
    waiting_tokens: int = 0  # output tokens the waiting requests asked for
    running: int = 0
    admitted: int = 0
    served: int = 0
    failed: int = 0
    cancelled: int = 0
    rejected: int = 0

    def retry_after_s(self) -> int:
        """Retry-After of a 429: the estimated time for the slots to serve the requests waiting now."""
        return max(1, math.ceil(self.estimate.seconds(self.waiting, self.waiting_tokens) / self.slots))

    def state(self) -> dict[str, Any]:
        counts = ("slots", "running", "waiting", "admitted", "served", "failed", "cancelled", "rejected")
        return {k: getattr(self, k) for k in counts} | {"backend": self.backend.name, "service_estimate": {
            "first_token_s": self.estimate.first_s, "per_token_s": self.estimate.token_s,
            "observed": self.estimate.observed, "source": self.estimate.source}}


class ExpertServer:
    """The models served on one metered device: their queues and slots, the limits, the counters and the
    API key; the HTTP routes (create_app) only call its methods."""

    def __init__(self, models: Backend | dict[str, Backend], meter: SampledCounter | None, slots: int = 1,
                 limits: Limits | None = None, api_key: str | None = None):
        if slots < 1:
            raise ValueError("slots must be at least 1")
        models = models if isinstance(models, dict) else {models.name: models}
        self.limits = limits or Limits.for_models(models)
        self.meter = meter
        self.shares = EnergyShares(meter) if meter else None
        self.models = {n: ServedModel(n, b, slots, ServiceEstimate.measure(b),
                                      ThreadPoolExecutor(slots, thread_name_prefix=f"gen-{n}"), asyncio.Semaphore(slots))
                       for n, b in models.items()}
        self.key_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None  # the key itself is not kept
        self.created = int(time.time())
        self.received = self.invalid = self.unauthorized = 0
        self.jobs: set[GenerationJob] = set()  # generating now: close() stops them

    # -- who may ask, and what --------------------------------------------------------------------------
    def authorized(self, path: str, headers: Headers) -> bool:
        """True where no key is set, for /health, or with `Authorization: Bearer <key>` (compared in constant
        time); a refusal is counted as unauthorized."""
        if self.key_digest is None or path in PUBLIC_PATHS:
            return True
        scheme, _, given = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(),
                                                              self.key_digest):
            return True
        self.unauthorized += 1
        return False

    async def read(self, request: Request, schema: type[CommonRequest]) -> CommonRequest:
        """The body, validated: 413 over the size limit (the rest is read and dropped), 400 not JSON, 422 invalid."""
        limit, declared = self.limits.max_body_bytes, request.headers.get("content-length")
        chunks, size = [], 0
        too_big = declared is not None and declared.isdigit() and int(declared) > limit
        async for chunk in request.stream():
            size += len(chunk)
            too_big = too_big or size > limit
            if too_big:  # read and drop the rest (closing on a client still sending resets its connection)
                if size > max(64 << 20, 8 * limit):
                    break
                continue
            chunks.append(chunk)
        if too_big:
            raise HTTPProblem(413, f"request body of {declared or f'over {size}'} bytes exceeds the limit of "
                                   f"{limit} bytes (--max-body-bytes)", "request_too_large")
        raw = b"".join(chunks)
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPProblem(400, f"the body is not JSON ({exc})", "invalid_request_error") from None
        if not isinstance(data, dict):
            kind = {list: "a list", str: "a string", type(None): "null"}.get(type(data), type(data).__name__)
            raise HTTPProblem(422, f"the body must be a JSON object, not {kind}", "invalid_request_error")
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise HTTPProblem(422, f"invalid request: {detail}", "invalid_request_error") from None

    def pick(self, requested: str | None) -> ServedModel:
        if len(self.models) == 1:  # with one model, any name reaches it (clients send "default")
            return next(iter(self.models.values()))
        if requested in self.models:
            return self.models[requested]
        raise HTTPProblem(404, f"model {requested!r} is not served here (models: {', '.join(self.models)})",
                          "model_not_found")

    async def admit(self, req: CommonRequest) -> tuple[ServedModel, GenerationJob]:
        """The request's model and job, or an HTTPProblem: 400 over a limit, 404 no such model, 429 queue full."""
        model, prompt = self.pick(req.model), req.text()
        tokens, asked_by = req.output_tokens
        limits = self.limits
        if tokens > limits.max_tokens:
            raise HTTPProblem(400, f"{asked_by} {tokens} exceeds the limit of {limits.max_tokens} (--max-tokens)",
                              "invalid_request_error")
        hint = req.x_prompt_tokens or max(1, len(prompt) // 4)
        counter = getattr(model.backend, "prompt_length", None)
        n = await asyncio.to_thread(counter, prompt, hint) if counter else hint
        if n > limits.max_prompt_tokens:
            raise HTTPProblem(400, f"the prompt has {n} tokens, over the limit of {limits.max_prompt_tokens} "
                                   f"(--max-prompt-tokens)", "invalid_request_error")
        if limits.context and n + tokens > limits.context:
            raise HTTPProblem(400, f"prompt ({n}) + {asked_by} ({tokens}) tokens exceed the model's context of "
                                   f"{limits.context}", "invalid_request_error")
        if model.waiting + model.running >= model.slots + limits.queue:
            model.rejected += 1
            retry = model.retry_after_s()
            raise HTTPProblem(429, f"model {model.name!r} is busy: {model.waiting} requests wait for its "
                                   f"{model.slots} slot(s) (--queue {limits.queue}); retry after {retry} s",
                              "rate_limit_exceeded", {"Retry-After": str(retry)})
        model.admitted += 1
        return model, GenerationJob(prompt, n, tokens)

    # -- serving ------------------------------------------------------------------------------------------
    async def run(self, model: ServedModel, job: GenerationJob, arrived: float,
                  gone: Callable[[], Awaitable[bool]]) -> Answer:
        """Queue for a slot (FIFO), generate on it, then read the energy (after the slot is free). The outcome
        is counted once: served, failed (BackendError) or cancelled (Cancelled: the client left)."""
        try:
            await self._queue(model, job, gone)
            model.running += 1
            try:
                gen, queue_s, span = await self._generate(model, job, arrived, gone)
            finally:
                model.running -= 1
                model.sem.release()
        except BackendError:
            model.failed += 1
            raise
        except (Cancelled, asyncio.CancelledError):
            model.cancelled += 1
            raise
        model.served += 1
        model.estimate.observe(gen)
        extra = {"model": model.name, "ttft_s": gen.ttft_s, "decode_s": gen.decode_s, "queue_s": queue_s,
                 "prompt_tokens": gen.prompt_tokens, "output_tokens": gen.output_tokens,
                 "energy_J": None, "energy_resolution_J": None, "energy_method": "none", "energy_reason": NO_METER}
        if self.shares:
            share: Share = await asyncio.to_thread(self.shares.energy, span)
            extra.update(energy_J=share.energy_J, energy_resolution_J=share.resolution_J,
                         energy_method=share.method, energy_reason=None)
        return Answer(gen, extra)

    async def _queue(self, model: ServedModel, job: GenerationJob, gone: Callable[[], Awaitable[bool]]) -> None:
        """Wait for a slot; Cancelled if the client leaves meanwhile. On return the caller holds the slot."""
        model.waiting += 1
        model.waiting_tokens += job.max_tokens
        acquire = asyncio.ensure_future(model.sem.acquire())
        try:
            while not (await asyncio.wait({acquire}, timeout=POLL_S))[0]:
                if await gone():
                    raise Cancelled("the client left while queued")
        except BaseException:
            if acquire.done() and not acquire.cancelled():
                model.sem.release()  # acquired just as the client left
            else:
                acquire.cancel()
            raise
        finally:
            model.waiting -= 1
            model.waiting_tokens -= job.max_tokens

    async def _generate(self, model: ServedModel, job: GenerationJob, arrived: float,
                        gone: Callable[[], Awaitable[bool]]) -> tuple[Generation, float, Span | None]:
        """Generate in the model's worker thread, watching the client; returns once the thread has stopped."""
        self.jobs.add(job)
        work = asyncio.get_running_loop().run_in_executor(model.pool, self._work, model, job, arrived)
        try:
            while not (await asyncio.wait({work}, timeout=POLL_S))[0]:
                if not job.cancel.is_set() and await gone():
                    job.cancel.set()  # the thread stops at its next token and raises Cancelled
            return work.result()
        except asyncio.CancelledError:
            job.cancel.set()
            await asyncio.wait({work})  # the slot is given back only once the thread has left it
            if not work.cancelled():
                work.exception()  # Cancelled, as expected: retrieved, so asyncio does not report it
            raise
        finally:
            self.jobs.discard(job)

    def _work(self, model: ServedModel, job: GenerationJob, arrived: float) -> tuple[Generation, float, Span | None]:
        """In a worker thread: generate, stopping between tokens if the job is cancelled."""
        queue_s = time.perf_counter() - arrived
        span = self.shares.begin() if self.shares else None
        answered = False

        def on_token(text: str) -> None:
            if job.cancel.is_set():
                raise Cancelled("the client left while its answer was generated")
            if job.on_text:
                job.on_text(text)

        try:
            gen = model.backend.generate(job.prompt, job.prompt_tokens, job.max_tokens, on_token=on_token)
            answered = True
        finally:  # whatever happened (client gone too), the request no longer runs on the device
            if self.shares:
                self.shares.stop(span, read=answered)
        return gen, queue_s, span

    # -- what the routes answer ------------------------------------------------------------------------------
    async def complete(self, request: Request, chat: bool):
        """A completion (chat or not), as one JSON answer or a stream of server-sent events."""
        arrived = time.perf_counter()
        self.received += 1
        try:
            req = await self.read(request, ChatRequest if chat else CompletionRequest)
            model, job = await self.admit(req)
        except HTTPProblem as problem:
            if problem.code != 429:  # 429s are counted as their model's rejected
                self.invalid += 1
            raise
        shape = OpenAIShape(chat, model.name)
        if not req.stream:
            try:
                answer = await self.run(model, job, arrived, request.is_disconnected)
            except Cancelled:
                return JSONResponse({"error": {"message": "client gone", "type": "cancelled", "code": 499}},
                                    status_code=499)
            except BackendError as exc:
                raise HTTPProblem(502 if exc.retryable else 500, str(exc), "backend_error") from None
            return shape.answer(answer)
        loop, tokens = asyncio.get_running_loop(), asyncio.Queue()
        job.on_text = lambda text: loop.call_soon_threadsafe(tokens.put_nowait, text)
        # the job runs on its own: a stream whose client leaves before its first byte is still counted
        task = asyncio.ensure_future(self.run(model, job, arrived, request.is_disconnected))
        task.add_done_callback(lambda t: (tokens.put_nowait(None), t.cancelled() or t.exception()))
        return StreamingResponse(self._events(shape, job, task, tokens), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @staticmethod
    async def _events(shape: "OpenAIShape", job: GenerationJob, task: asyncio.Future,
                      tokens: asyncio.Queue) -> AsyncIterator[str]:
        """The stream: a chunk per token, then one with usage and x_moe2sim, then [DONE]; on failure an
        error event and no [DONE]."""
        try:
            while (text := await tokens.get()) is not None:  # tokens precede the None the finished task puts
                yield shape.event(shape.chunk(text, None))
            try:
                answer = await task
            except (BackendError, Cancelled) as exc:
                yield shape.event({"error": {"message": str(exc), "type": "backend_error"}})
                return
            yield shape.event(shape.chunk("", "length") | shape.usage(answer))
            yield "data: [DONE]\n\n"
        finally:
            if not task.done():  # the client went away mid-stream
                job.cancel.set()
                task.cancel()

    def model_list(self) -> dict[str, Any]:
        """GET /v1/models, as the OpenAI API defines it (vLLM's max_model_len and root added)."""
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": self.created, "owned_by": "moe2sim", "root": m.backend.name,
             "max_model_len": getattr(m.backend, "context_length", None)} for n, m in self.models.items()]}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "models": {n: m.backend.name for n, m in self.models.items()},
                "meter": self.meter.name if self.meter else None, "served": self.served,
                "requests": {"received": self.received, "invalid": self.invalid, "unauthorized": self.unauthorized},
                "experts": {n: m.state() for n, m in self.models.items()}, "limits": asdict(self.limits),
                "api_key": self.key_digest is not None}

    @property
    def served(self) -> int:
        return sum(m.served for m in self.models.values())

    def close(self) -> None:
        """Stop what still generates (threads end at their next token) and drop what waits for a thread."""
        for job in list(self.jobs):
            job.cancel.set()
        for m in self.models.values():
            m.pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class OpenAIShape:
    """The OpenAI answer objects of one request: text_completion or chat.completion (and their chunks)."""

    chat: bool
    model: str
    id: str = field(default_factory=lambda: f"{time.perf_counter_ns():x}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": f"{'chatcmpl' if self.chat else 'cmpl'}-{self.id}", "object": kind, "created": self.created,
                "model": self.model}

    def _choice(self, text: str, finish: str | None, delta: bool) -> dict[str, Any]:
        if not self.chat:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return {"index": 0, ("delta" if delta else "message"): {"role": "assistant", "content": text},
                "finish_reason": finish}

    @staticmethod
    def usage(answer: Answer) -> dict[str, Any]:
        gen = answer.gen
        return {"usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.output_tokens,
                          "total_tokens": gen.prompt_tokens + gen.output_tokens}, "x_moe2sim": answer.extra}

    def answer(self, answer: Answer) -> dict[str, Any]:
        return self._head(False) | {"choices": [self._choice(answer.gen.text, "length", False)]} | self.usage(answer)

    def chunk(self, text: str, finish: str | None) -> dict[str, Any]:
        return self._head(True) | {"choices": [self._choice(text, finish, True)]}

    @staticmethod
    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload, allow_nan=False)}\n\n"


class KeyGuard:
    """ASGI middleware: a request the server does not authorize gets 401 with an OpenAI error body and
    `WWW-Authenticate: Bearer`, before any route runs (a pure ASGI wrapper: streams are not buffered)."""

    def __init__(self, app, server: ExpertServer):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS" and \
                not self.server.authorized(scope["path"], Headers(scope=scope)):
            problem = HTTPProblem(401, "a valid API key is required: send the header Authorization: Bearer <key>",
                                  "authentication_error", {"WWW-Authenticate": "Bearer"})
            await problem.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(server: ExpertServer) -> FastAPI:
    """The HTTP routes over `server`: each one a call of its methods."""
    @asynccontextmanager
    async def lifespan(_):
        yield
        server.close()

    app = FastAPI(title="moe2sim hardware serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server
    app.add_middleware(KeyGuard, server=server)

    @app.exception_handler(HTTPProblem)
    async def problem(_: Request, exc: HTTPProblem):
        return exc.response()

    @app.exception_handler(404)
    async def no_route(request: Request, _: Exception):
        return HTTPProblem(404, f"no route {request.method} {request.url.path}", "not_found").response()

    @app.exception_handler(405)
    async def bad_method(request: Request, _: Exception):
        return HTTPProblem(405, f"{request.method} is not allowed on {request.url.path}",
                           "method_not_allowed").response()

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception):
        return HTTPProblem(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error").response()

    @app.get("/health")
    async def health():
        return server.health()

    @app.get("/v1/models")
    async def models():
        return server.model_list()

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await server.complete(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await server.complete(request, chat=True)

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
    """uvicorn serving an ExpertServer on a bound socket, in a background thread (signals stay with the
    caller's main thread); `port` is the bound port, `shutdown()` stops it and waits."""

    def __init__(self, server: ExpertServer, host: str = "127.0.0.1", port: int = 0, backlog: int = 2048,
                 graceful_s: float = 3.0, sock: socket.socket | None = None):
        import uvicorn

        self.expert_server, self.sock = server, sock or bind(host, port, backlog)
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(server), http="h11", loop="asyncio", lifespan="on", log_level="warning",
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
        self.expert_server.close()
        self.thread.join(timeout_s)
        self.sock.close()

    def served(self) -> int:
        return self.expert_server.served


def serve(models: Backend | dict[str, Backend], meter: SampledCounter | None, host: str, port: int,
          slots: int = 1, limits: Limits | None = None, api_key: str | None = None) -> CompletionServer:
    """Start serving one backend, or several by expert name, in a background thread; returns the
    server (call shutdown() to stop)."""
    return CompletionServer(ExpertServer(models, meter, slots, limits, api_key), host, port).start()
