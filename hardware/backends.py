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
import urllib.error
import urllib.request
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

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


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
        torch = self.torch
        ids = self._ids(prompt, prompt_tokens)
        out_ids = []
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.model(ids, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            self._sync()
            first = time.perf_counter()
            out_ids.append(int(token))
            if on_token:
                on_token(self._text([out_ids[-1]]))
            past = out[self.cache_arg]
            for _ in range(max_tokens - 1):
                out = self.model(token, use_cache=True, **{self.cache_arg: past})
                past = out[self.cache_arg]
                token = out.logits[:, -1:].argmax(-1)
                out_ids.append(int(token))
                if on_token:
                    self._sync()
                    on_token(self._text([out_ids[-1]]))
            self._sync()
            end = time.perf_counter()
        return Generation(self._text(out_ids), int(ids.shape[1]), len(out_ids), first - start, end - first)

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else "".join(f"<{i}>" for i in ids)


def server_says(error: urllib.error.HTTPError) -> str:
    """The error message of an OpenAI-style error body ({"error": {"message": ...}}), if it has one."""
    try:
        message = json.loads(error.read() or b"{}").get("error", {}).get("message")
    except (ValueError, AttributeError, OSError):
        return ""
    return f": {message}" if message else ""


class OpenAIBackend:
    """Streaming client of an OpenAI-compatible /v1/completions endpoint."""

    def __init__(self, base_url: str, model: str = "default", timeout_s: float = 120.0):
        self.base_url, self.model, self.timeout_s = base_url.rstrip("/"), model, timeout_s
        self.name = f"{model}@{self.base_url}"

    def generate(self, prompt: str, prompt_tokens: int, max_tokens: int,
                 on_token: Callable[[str], None] | None = None) -> Generation:
        body = json.dumps({"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                           "stream": True, "ignore_eos": True, "x_prompt_tokens": prompt_tokens}).encode()
        request = urllib.request.Request(f"{self.base_url}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        first = last = None
        pieces: list[str] = []
        extra: dict[str, Any] = {}
        usage: dict[str, Any] = {}
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                for raw in response:
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    text = "".join(c.get("text", "") for c in chunk.get("choices", []))
                    if text:
                        last = time.perf_counter()
                        first = first or last
                        pieces.append(text)
                        if on_token:
                            on_token(text)
                    usage = chunk.get("usage") or usage
                    extra = chunk.get("x_moe2sim") or extra
        except urllib.error.HTTPError as exc:
            raise BackendError(f"{self.base_url}: HTTP {exc.code} {exc.reason}{server_says(exc)}",
                               retryable=exc.code >= 500) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise BackendError(f"{self.base_url}: unreachable ({getattr(exc, 'reason', exc)})", retryable=True) from None
        except json.JSONDecodeError as exc:
            raise BackendError(f"{self.base_url}: malformed stream chunk ({exc})", retryable=False) from None
        if first is None:
            raise BackendError(f"{self.base_url}: the stream carried no tokens", retryable=True)
        return Generation("".join(pieces), int(usage.get("prompt_tokens", prompt_tokens)),
                          int(usage.get("completion_tokens", len(pieces))), first - start, last - first, extra)
