"""`hardware serve` driven by the official OpenAI Python client (PyPI `openai`) over loopback, a real tiny
Llama on this CPU: every endpoint, streamed and not, parses, with and without an API key; with a key, every
route but /health answers 401 without it; the key reaches no output, log or file."""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from moe2sim.hardware.backends import BackendError, HFBackend, OpenAIBackend
from moe2sim.hardware.serve import serve

ROOT = Path(__file__).resolve().parents[1]
KEY = f"sk-moe2sim-{secrets.token_hex(12)}"


@pytest.fixture(scope="module", params=["open", "keyed"])
def server(request):
    srv = serve(HFBackend("tiny-llama"), None, "127.0.0.1", 0, slots=2,
                api_key=KEY if request.param == "keyed" else None)
    yield srv, request.param == "keyed"
    srv.shutdown()


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def test_the_official_client_parses_every_endpoint(server):
    srv, keyed = server
    api = client(srv.url, KEY if keyed else "unused")
    (model,) = api.models.list().data  # GET /v1/models as the OpenAI API defines it
    assert (model.id, model.object, model.owned_by) == ("tiny-llama", "model", "moe2sim")
    assert isinstance(model.created, int) and model.created > 0

    done = api.completions.create(model=model.id, prompt="hello", max_tokens=3)
    assert done.object == "text_completion" and done.model == model.id  # answers carry the listed id
    assert done.usage.completion_tokens == 3 and done.choices[0].text and done.choices[0].finish_reason == "length"
    pieces = list(api.completions.create(model=model.id, prompt="hello", max_tokens=3, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == done.choices[0].text  # greedy: the same tokens
    assert pieces[-1].usage.completion_tokens == 3

    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}]  # content as a list of parts
    chat = api.chat.completions.create(model=model.id, messages=[{"role": "user", "content": parts}],
                                       max_completion_tokens=3)
    assert chat.object == "chat.completion" and chat.model == model.id
    assert chat.usage.completion_tokens == 3 and chat.choices[0].message.role == "assistant"
    as_text = api.chat.completions.create(model=model.id, max_tokens=3,
                                          messages=[{"role": "user", "content": "hello\nthere"}])
    assert as_text.choices[0].message.content == chat.choices[0].message.content  # parts joined by newlines
    chunks = list(api.chat.completions.create(model=model.id, messages=[{"role": "user", "content": parts}],
                                              max_completion_tokens=3, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert sum(bool(c.choices[0].delta.content) for c in chunks) == 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == chat.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_without_the_key_every_route_but_health_is_401(server):
    srv, keyed = server
    if not keyed:
        assert httpx.get(f"{srv.url}/v1/models").status_code == 200  # an open server needs no header
        return
    wrong = client(srv.url, "sk-wrong")
    calls = [lambda: wrong.models.list(),
             lambda: wrong.completions.create(model="tiny-llama", prompt="hi", max_tokens=2),
             lambda: list(wrong.completions.create(model="tiny-llama", prompt="hi", max_tokens=2, stream=True)),
             lambda: wrong.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}]),
             lambda: list(wrong.chat.completions.create(model="tiny-llama", stream=True,
                                                        messages=[{"role": "user", "content": "hi"}]))]
    for call in calls:
        with pytest.raises(openai.AuthenticationError) as caught:
            call()
        assert caught.value.status_code == 401
    for headers in ({}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):  # no header, no scheme, wrong one
        r = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "hi"}, headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "authentication_error" and KEY not in r.text
    health = httpx.get(f"{srv.url}/health").json()  # open, as vLLM's /health is
    assert health["api_key"] is True and health["requests"]["unauthorized"] >= len(calls) + 3
    assert KEY not in httpx.get(f"{srv.url}/health").text
    # moe2sim's own client sends the key as a bearer token; without it the 401 is final, not retried
    assert OpenAIBackend(srv.url, api_key=KEY).generate("hi", 4, 2).output_tokens == 2
    with pytest.raises(BackendError, match="401") as refused:
        OpenAIBackend(srv.url, api_key="sk-wrong").generate("hi", 4, 2)
    assert not refused.value.retryable and "sk-wrong" not in str(refused.value)


def test_the_key_reaches_no_output_file_or_log(tmp_path):
    """`hardware serve` in its own process, the key from --api-key-file (which wins over MOE2SIM_API_KEY),
    asked with the right key, a wrong one and the environment's: nothing it prints, and no file it leaves in
    its working folder, holds either key."""
    env_key = f"sk-env-{secrets.token_hex(12)}"
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{KEY}\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "moe2sim.hardware", "serve", "--backend", "hf:tiny-llama",
                             "--meter", "none", "--port", "0", "--api-key-file", str(key_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work,
                            env={**os.environ, "MOE2SIM_API_KEY": env_key})
    try:
        first = proc.stdout.readline()
        url = "http://127.0.0.1:" + re.search(r":(\d+) ", first).group(1)
        assert "API key required (from --api-key-file)" in first
        assert OpenAIBackend(url, api_key=KEY).generate("hi", 4, 2).output_tokens == 2
        for other in (env_key, "sk-wrong", None):
            assert httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                              headers={"Authorization": f"Bearer {other}"} if other else {}).status_code == 401
        bad = httpx.post(f"{url}/v1/completions", content=b"{oops", headers={"Authorization": f"Bearer {KEY}"})
        assert bad.status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    printed = first + stdout + stderr
    assert "1 requests served" in printed
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != key_file]
    for secret in (KEY, env_key):
        assert secret not in printed
        assert not any(secret.encode() in p.read_bytes() for p in written)


@pytest.mark.parametrize("flags,env,says", [
    (["--api-key", "a", "--api-key-file", "k"], {}, "not allowed with argument"),
    (["--api-key-file", "{empty}"], {}, "--api-key-file"),
    (["--api-key-file", "{missing}"], {}, "missing"),
    (["--api-key", "two words"], {}, "--api-key"),
    ([], {"MOE2SIM_API_KEY": " \t"}, "MOE2SIM_API_KEY"),  # set but blank: refused, not served open
    ([], {"MOE2SIM_API_KEY": ""}, ""),  # empty reads as unset: no key
])
def test_key_flags_are_checked(tmp_path, flags, env, says):
    (tmp_path / "empty").write_text("\n")
    flags = [f.format(empty=tmp_path / "empty", missing=tmp_path / "missing") for f in flags]
    cmd = [sys.executable, "-m", "moe2sim.hardware", "serve", "--backend", "hf:tiny-llama", "--meter", "none",
           "--port", "0", *flags]
    if not says:  # starts without a key
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, **env})
        assert "API key none" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        return
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
