"""The real vLLM engine (CPU build, SmolLM2-135M converted by ``make model``) behind the server.

One ``llmwatch serve --engine vllm`` process serves the whole test session: the engine takes tens
of seconds to start on CPU. Every check of counters compares values read before and after the
test's own requests, so the tests do not depend on their order.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import requires
from support.serving import vllm_series_in_rules

from serving.engines import vllm as vllm_engine
from serving.engines.synthetic import SyntheticEngine
from serving.engines.vllm import choose_dtype
from serving.model_setup import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / DEFAULT_MODEL_DIR
TIMEOUT_S = 8.0  # the server's request timeout: short answers take 1-3 s on two cores
MAX_MODEL_LEN = 1024


# Only the tests that use the server need vLLM and the model; choose_dtype is a pure function.
def _missing() -> str | None:
    if not (MODEL / "config.json").is_file():
        return f"{DEFAULT_MODEL_DIR} is absent: `make model` installs vLLM and converts it"
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (`make model`)"
    return None


@pytest.mark.parametrize(
    ("requested", "on_cpu", "flags", "expected"),
    [
        # AVX2-only CPU: bfloat16 is emulated, float32 is about twice as fast.
        ("auto", True, {"avx2", "fma"}, "float32"),
        ("auto", True, set(), "float32"),
        # Native bfloat16 units: the model's own dtype.
        ("auto", True, {"avx512f", "avx512_bf16"}, "auto"),
        ("auto", True, {"amx_bf16", "amx_tile"}, "auto"),
        # GPUs always take the model's dtype; explicit choices are kept.
        ("auto", False, set(), "auto"),
        ("bfloat16", True, {"avx2"}, "bfloat16"),
        ("float16", False, set(), "float16"),
        ("float32", True, {"avx512_bf16"}, "float32"),
    ],
)
def test_choose_dtype(requested: str, on_cpu: bool, flags: set[str], expected: str) -> None:
    assert choose_dtype(requested, on_cpu=on_cpu, cpu_flags=frozenset(flags)) == expected


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    monkeypatch.setattr(vllm_engine, "_CPUINFO", cpuinfo)
    assert vllm_engine._cpu_flags() == frozenset({"fpu", "avx2", "amx_bf16"})
    monkeypatch.setattr(vllm_engine, "_CPUINFO", tmp_path / "absent")
    assert vllm_engine._cpu_flags() == frozenset()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A running vLLM server; yields a client with its base URL."""
    missing = _missing()
    if missing:
        requires.missing(missing, "make model")
    workdir = tmp_path_factory.mktemp("vllm-server")
    port = _free_port()
    log = (workdir / "serve.log").open("wb")
    env = {**os.environ, "LLMWATCH_SERVING_VLLM_CACHE_DIR": str(workdir / "vllm")}
    command = [
        sys.executable, "-m", "llmwatch.cli", "serve", "--engine", "vllm",
        "--model", str(MODEL), "--port", str(port), "--max-model-len", str(MAX_MODEL_LEN),
        "--max-running", "4", "--request-timeout", str(TIMEOUT_S), "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/health").status_code == 200:
                    break
            time.sleep(1)
        else:
            proc.poll()
        if proc.returncode is not None or client.get("/health").status_code != 200:
            tail = (workdir / "serve.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the vLLM server did not become ready:\n{tail}")
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _metrics(client: httpx.Client) -> dict[tuple[str, frozenset], float]:
    text = client.get("/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def _vllm(metrics: dict, name: str) -> float:
    # vLLM labels its series with engine and model_name; one engine serves here.
    return sum(v for (n, _), v in metrics.items() if n == f"vllm:{name}")


def _status_delta(before: dict, after: dict) -> dict[str, float]:
    statuses = ("success", "error", "timeout", "rejected", "json_parse_error")
    name = "qwen_requests_total"
    return {s: _value(after, name, status=s) - _value(before, name, status=s) for s in statuses}


def _chat(client: httpx.Client, content: str, **body: object) -> httpx.Response:
    messages = [{"role": "user", "content": content}]
    return client.post("/v1/chat/completions", json={"messages": messages, **body})


def _wait_engine_idle(client: httpx.Client) -> dict:
    # vLLM updates its gauges from the engine core's next report: poll briefly.
    deadline = time.monotonic() + 15
    while True:
        metrics = _metrics(client)
        idle = _vllm(metrics, "num_requests_running") + _vllm(metrics, "num_requests_waiting")
        if idle == 0 or time.monotonic() > deadline:
            return metrics
        time.sleep(0.25)


def test_models_lists_the_served_model(server: httpx.Client) -> None:
    body = server.get("/v1/models").json()
    assert [m["id"] for m in body["data"]] == [MODEL.name]


def test_chat_uses_the_chat_template(server: httpx.Client) -> None:
    response = _chat(server, "What is the capital of France?", max_tokens=24, temperature=0)
    assert response.status_code == 200, response.text
    body = response.json()
    # Only an instruct model prompted through its chat template answers this plainly.
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert 0 < body["usage"]["completion_tokens"] <= 24


def test_completion_is_deterministic_at_temperature_zero(server: httpx.Client) -> None:
    body = {"prompt": "def add(a, b):", "max_tokens": 12, "temperature": 0}
    first = server.post("/v1/completions", json=body)
    second = server.post("/v1/completions", json=body)
    assert first.status_code == second.status_code == 200
    one, two = first.json(), second.json()
    assert one["choices"][0]["text"] == two["choices"][0]["text"] != ""
    assert one["usage"]["completion_tokens"] == 12
    assert one["choices"][0]["finish_reason"] == "length"


def test_streaming_matches_the_plain_answer(server: httpx.Client) -> None:
    question = "Name a primary color."
    plain = _chat(server, question, max_tokens=20, temperature=0).json()
    pieces, finish, done = [], None, False
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 20,
            "temperature": 0, "stream": True}  # fmt: skip
    with server.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            choice = json.loads(line[6:])["choices"][0]
            pieces.append(choice["delta"].get("content") or "")
            finish = choice["finish_reason"] or finish
    assert done
    assert len([p for p in pieces if p]) > 1  # really streamed, not one block
    assert "".join(pieces) == plain["choices"][0]["message"]["content"]
    assert finish == plain["choices"][0]["finish_reason"]


def test_json_modes_give_valid_json(server: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["name", "population"],
        "additionalProperties": False,
    }
    before = _metrics(server)
    any_json = _chat(server, "List three colors.", max_tokens=60, temperature=0,
                     response_format={"type": "json_object"})  # fmt: skip
    fitted = _chat(server, "Describe a city.", max_tokens=80, temperature=0,
                   response_format={"type": "json_schema",
                                    "json_schema": {"name": "city", "schema": schema}})  # fmt: skip
    after = _metrics(server)
    assert any_json.status_code == fitted.status_code == 200
    assert isinstance(json.loads(any_json.json()["choices"][0]["message"]["content"]), dict)
    jsonschema.validate(json.loads(fitted.json()["choices"][0]["message"]["content"]), schema)
    # Structured output makes the JSON check pass: both count as success.
    delta = _status_delta(before, after)
    assert delta["success"] == 2
    assert delta["json_parse_error"] == 0


def test_metrics_after_known_traffic(server: httpx.Client) -> None:
    before = _metrics(server)
    ok = [
        server.post("/v1/completions", json={"prompt": p, "max_tokens": 8, "temperature": 0})
        for p in ("The sky is", "Water boils at")
    ]
    too_long = server.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 5000})
    after = _metrics(server)
    assert [r.status_code for r in ok] == [200, 200]
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"]
    delta = _status_delta(before, after)
    assert delta == {"success": 2, "error": 0, "timeout": 0, "rejected": 1, "json_parse_error": 0}
    prompt = sum(r.json()["usage"]["prompt_tokens"] for r in ok)
    output = sum(r.json()["usage"]["completion_tokens"] for r in ok)
    assert output == 16

    def grew(name: str) -> float:
        return _value(after, name) - _value(before, name)

    assert grew("qwen_inference_duration_seconds_count") == 2
    assert grew("qwen_output_tokens_sum") == output
    assert grew("qwen_prompt_tokens_sum") == prompt
    assert _value(after, "qwen_requests_in_flight") == 0
    # Our token counts agree with vLLM's own counters for the same traffic.
    assert _vllm(after, "generation_tokens_total") - _vllm(before, "generation_tokens_total") == (
        output
    )
    assert _vllm(after, "prompt_tokens_total") - _vllm(before, "prompt_tokens_total") == prompt


def _shapes(text: str) -> dict[str, tuple[str, frozenset[str], frozenset[str]]]:
    """vllm:* families of an exposition: type, label names, and bucket bounds."""
    out = {}
    for family in text_string_to_metric_families(text):
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        if family.name.startswith("vllm:") and samples:
            names = frozenset(k for s in samples for k in s.labels if k != "le")
            bounds = frozenset(s.labels["le"] for s in samples if "le" in s.labels)
            out[family.name] = (family.type, names, bounds)
    return out


def test_vllm_metrics_are_exported(server: httpx.Client) -> None:
    text = server.get("/metrics").text
    for name in ("num_requests_running", "generation_tokens_total", "e2e_request_latency_seconds",
                 "kv_cache_usage_perc"):  # fmt: skip
        assert f"vllm:{name}" in text
    assert f'model_name="{MODEL.name}"' in text
    assert text.count("# TYPE process_cpu_seconds_total") == 1
    # Every vllm:* series the rules read, spelled as this vLLM exposes it (a counter's _total,
    # a histogram's _bucket/_sum/_count): a misspelt one would leave its signal absent forever.
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert vllm_series_in_rules() - exposed == set()
    # The synthetic engine stands in with the same types, label names and buckets.
    synthetic = SyntheticEngine(model_name=MODEL.name, max_model_len=MAX_MODEL_LEN)
    ours = _shapes(generate_latest(synthetic.metrics_registry).decode())
    real = _shapes(text)
    assert {name: real.get(name) for name in ours} == ours


def test_timeout_aborts_the_engine_request(server: httpx.Client) -> None:
    before = _metrics(server)
    # A plain continuation without chat template rarely emits the end-of-turn token, so 900
    # tokens (minutes on CPU) outlast the timeout.
    started = time.monotonic()
    response = server.post(
        "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 900, "temperature": 0}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 10
    idle = _wait_engine_idle(server)
    assert _vllm(idle, "num_requests_running") == 0
    tokens = _vllm(idle, "generation_tokens_total")
    assert tokens - _vllm(before, "generation_tokens_total") < 900
    time.sleep(1.5)
    # Nothing keeps generating once the request is gone.
    assert _vllm(_metrics(server), "generation_tokens_total") == tokens
    assert _status_delta(before, idle)["timeout"] == 1


def test_client_disconnect_aborts_the_engine_request(server: httpx.Client) -> None:
    before = _metrics(server)
    body = {"prompt": "Once upon a time", "max_tokens": 900, "temperature": 0, "stream": True}
    received = 0
    with server.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            received += line.startswith("data: ")
            if received == 3:
                break  # leaving the block closes the connection mid-stream
    idle = _wait_engine_idle(server)
    assert _vllm(idle, "num_requests_running") == 0
    tokens = _vllm(idle, "generation_tokens_total")
    time.sleep(1.5)
    assert _vllm(_metrics(server), "generation_tokens_total") == tokens
    after = _metrics(server)
    assert _value(after, "qwen_requests_in_flight") == 0
    # The serving layer counts a disconnect as timeout (see serving.service).
    assert _status_delta(before, after)["timeout"] == 1
