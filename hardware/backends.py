"""LLM backends that time what they generate: a local Hugging Face transformers model, and any
OpenAI-compatible HTTP server (vLLM, llama.cpp server, Ollama, or `hardware serve`) with streaming,
so time-to-first-token is measured at the first streamed token.

Local models are a real checkpoint folder, or an architecture-true model built from a named
config with random weights (latency and energy do not depend on weight values). Without a
tokenizer, prompts are fed as `prompt_tokens` deterministic token ids; generation is greedy with a
KV cache, one token at a time, and never stops early (exactly `max_tokens` tokens).
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

# Architecture-true shapes (hyper-parameters from each model's published config.json).
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "mistral-7b": ("mistral", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=32000)),
    "llama-3-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)),
    "llama-3.2-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                   tie_word_embeddings=True)),
    # HuggingFaceTB/SmolLM2-135M: a real small model, fast enough to serve on one CPU thread
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                   rope_theta=100000.0, tie_word_embeddings=True)),
    # a tiny Llama for tests on a CPU (not a real model's shape)
    "tiny-llama": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)),
}


class BackendError(RuntimeError):
    """A request failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable, self.retry_after_s = retryable, retry_after_s


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    ttft_s: float
    decode_s: float
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the server's energy and queueing


class Backend(Protocol):
    name: str

    def generate(self, prompt: str, prompt_tokens: int, max_tokens: int,
                 on_token: Callable[[str], None] | None = None) -> Generation: ...


class HFBackend:
    """A transformers causal LM on one device, greedy decoding with a KV cache."""

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32"):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.torch, self.device = torch, device
        torch_dtype = getattr(torch, dtype)
        path = Path(model)
        self.tokenizer = None
        if path.is_dir():
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
            if (path / "tokenizer.json").exists() or (path / "tokenizer.model").exists():
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        elif model in SHAPES:
            kind, params = SHAPES[model]
            torch.manual_seed(0)
            config = AutoConfig.for_model(kind, **params)
            self.model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        else:
            raise BackendError(f"model '{model}' is neither a checkpoint folder nor a known shape "
                               f"({', '.join(SHAPES)})", retryable=False)
        self.model.to(device).eval()
        # transformers renamed past_key_values to cache (5.x); support both
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.name = path.name if path.is_dir() else model
        self.vocab = self.model.config.vocab_size
        self.context_length = getattr(self.model.config, "max_position_embeddings", None)

    def prompt_length(self, prompt: str, prompt_tokens: int) -> int:
        """How many tokens generate() will feed for this prompt (the tokenizer's count, if any)."""
        if self.tokenizer is not None and prompt:
            return len(self.tokenizer(prompt).input_ids)
        return prompt_tokens

    def _ids(self, prompt: str, prompt_tokens: int):
        if self.tokenizer is not None and prompt:
            return self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
        ids = (self.torch.arange(prompt_tokens) * 7919 % (self.vocab - 10) + 5)[None, :]
        return ids.to(self.device)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def generate(self, prompt: str, prompt_tokens: int, max_tokens: int,
                 on_token: Callable[[str], None] | None = None) -> Generation:
        return self._decode(self._ids(prompt, prompt_tokens), max_tokens, on_token)[0]

    def generate_batch(self, prompt: str, prompt_tokens: int, max_tokens: int, n: int) -> list[Generation]:
        """n copies of the prompt decoded together, one forward pass per step for the whole batch (what a
        batching server does with n equal requests); each copy gets the batch's timings."""
        return self._decode(self._ids(prompt, prompt_tokens).repeat(n, 1), max_tokens, None)

    def _decode(self, ids, max_tokens: int, on_token: Callable[[str], None] | None) -> list[Generation]:
        """Greedy decoding of a batch of equal-length prompts; `on_token` hears the first row's tokens."""
        torch = self.torch
        out_ids: list[list[int]] = []
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.model(ids, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            self._sync()
            first = time.perf_counter()
            out_ids.append(token[:, 0].tolist())
            if on_token:
                on_token(self._text([out_ids[-1][0]]))
            past = out[self.cache_arg]
            for _ in range(max_tokens - 1):
                out = self.model(token, use_cache=True, **{self.cache_arg: past})
                past = out[self.cache_arg]
                token = out.logits[:, -1:].argmax(-1)
                out_ids.append(token[:, 0].tolist())
                if on_token:
                    self._sync()
                    on_token(self._text([out_ids[-1][0]]))
            self._sync()
            end = time.perf_counter()
        rows = [list(r) for r in zip(*out_ids)]
        return [Generation(self._text(r), int(ids.shape[1]), len(r), first - start, end - first) for r in rows]

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else "".join(f"<{i}>" for i in ids)


def _server_says(response) -> str:
    """The error message of an OpenAI-style error body ({"error": {"message": ...}}), if it has one."""
    try:
        body = json.loads(response.read() or b"{}")
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except Exception:  # noqa: BLE001  whatever the body is, the status says enough
        return ""
    return f": {message}" if message else ""


class OpenAIBackend:
    """Streaming client (httpx) of an OpenAI-compatible /v1/completions endpoint.

    A generation succeeds only when the stream ends with its `data: [DONE]` marker: a stream cut
    short (server died, connection dropped) or carrying an error event is a BackendError, as is
    anything that is not HTTP or not server-sent events. Timeouts: `connect_timeout_s` to connect,
    `read_timeout_s` for each wait for data (the first token included), `timeout_s` for the whole
    attempt (a server trickling bytes is cut off there). Transport errors, 5xx, 408 and 429 are
    retryable (429/503's Retry-After is kept in BackendError.retry_after_s).

    `api_key`: sent as `Authorization: Bearer <key>` with every request, for a server that requires one
    (`hardware serve --api-key`, vLLM, a paid API); 401/403 are not retryable. The key is held by the HTTP
    client only: it is in no name, message or record this class makes. A caller holding one key per
    endpoint (e.g. read from an environment variable a scenario names) passes it here.
    """

    def __init__(self, base_url: str, model: str = "default", timeout_s: float = 120.0,
                 connect_timeout_s: float | None = None, read_timeout_s: float | None = None,
                 api_key: str | None = None):
        import httpx

        self.httpx = httpx
        self.base_url, self.model, self.timeout_s = base_url.rstrip("/"), model, timeout_s
        self.connect_timeout_s = connect_timeout_s if connect_timeout_s is not None else min(10.0, timeout_s)
        self.read_timeout_s = min(read_timeout_s if read_timeout_s is not None else timeout_s, timeout_s)
        self.name = f"{model}@{self.base_url}"
        self.client = httpx.Client(
            timeout=httpx.Timeout(connect=self.connect_timeout_s, read=self.read_timeout_s,
                                  write=self.read_timeout_s, pool=self.timeout_s),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None)

    def close(self) -> None:
        self.client.close()

    def generate(self, prompt: str, prompt_tokens: int, max_tokens: int,
                 on_token: Callable[[str], None] | None = None) -> Generation:
        httpx = self.httpx
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                "stream": True, "ignore_eos": True, "x_prompt_tokens": prompt_tokens}
        start = time.perf_counter()
        deadline = start + self.timeout_s
        first = last = None
        pieces: list[str] = []
        extra: dict[str, Any] = {}
        usage: dict[str, Any] = {}
        done = False
        where = self.base_url
        try:
            with self.client.stream("POST", f"{self.base_url}/v1/completions", json=body) as response:
                if response.status_code >= 400:
                    retry_after = response.headers.get("retry-after")
                    raise BackendError(f"{where}: HTTP {response.status_code} {response.reason_phrase}"
                                       f"{_server_says(response)}",
                                       retryable=response.status_code >= 500 or response.status_code in (408, 429),
                                       retry_after_s=float(retry_after) if retry_after and
                                       retry_after.replace(".", "", 1).isdigit() else None)
                for line in response.iter_lines():
                    if time.perf_counter() > deadline:
                        raise BackendError(f"{where}: no complete answer within {self.timeout_s:g} s "
                                           f"(--timeout-s) after {len(pieces)} tokens", retryable=True)
                    line = line.strip()
                    if not line.startswith("data:"):
                        if line and not line.startswith((":", "event:", "id:", "retry:")):
                            raise BackendError(f"{where}: not a server-sent event stream ({line[:60]!r})",
                                               retryable=True)
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError as exc:
                        raise BackendError(f"{where}: malformed stream chunk ({exc})", retryable=True) from None
                    if not isinstance(chunk, dict):
                        raise BackendError(f"{where}: malformed stream chunk ({data[:60]!r})", retryable=True)
                    if chunk.get("error"):
                        error = chunk["error"]
                        message = error.get("message") if isinstance(error, dict) else error
                        raise BackendError(f"{where}: the server failed mid-stream after {len(pieces)} tokens: "
                                           f"{message}", retryable=True)
                    text = "".join(c.get("text") or (c.get("delta") or {}).get("content") or ""
                                   for c in chunk.get("choices") or [] if isinstance(c, dict))
                    if text:
                        last = time.perf_counter()
                        first = first or last
                        pieces.append(text)
                        if on_token:
                            on_token(text)
                    usage = chunk.get("usage") or usage
                    extra = chunk.get("x_moe2sim") or extra
        except httpx.ConnectTimeout:
            raise BackendError(f"{where}: unreachable (no connection within {self.connect_timeout_s:g} s, "
                               f"--connect-timeout)", retryable=True) from None
        except httpx.ConnectError as exc:
            raise BackendError(f"{where}: unreachable ({exc})", retryable=True) from None
        except httpx.ReadTimeout:
            raise BackendError(f"{where}: no data for {self.read_timeout_s:g} s (--read-timeout) after "
                               f"{len(pieces)} tokens", retryable=True) from None
        except httpx.RemoteProtocolError as exc:
            raise BackendError(f"{where}: broken HTTP response after {len(pieces)} tokens ({exc})",
                               retryable=True) from None
        except httpx.HTTPError as exc:  # read/write errors, pool timeouts, ...
            raise BackendError(f"{where}: connection failed after {len(pieces)} tokens "
                               f"({type(exc).__name__}: {exc})", retryable=True) from None
        except UnicodeDecodeError as exc:
            raise BackendError(f"{where}: not text ({exc})", retryable=True) from None
        if not done:
            raise BackendError(f"{where}: the stream ended without its [DONE] marker after {len(pieces)} tokens "
                               f"(cut off)", retryable=True)
        if first is None:
            raise BackendError(f"{where}: the stream carried no tokens", retryable=True)
        return Generation("".join(pieces), int(usage.get("prompt_tokens", prompt_tokens)),
                          int(usage.get("completion_tokens", len(pieces))), first - start, last - first, extra)
