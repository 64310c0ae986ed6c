"""vLLM's engine metrics (``vllm:*``), as the synthetic engine exports them.

Names, types, label names and default bucket boundaries are vLLM 0.32's
(``vllm/v1/metrics/loggers.py`` and ``buckets.py``), so that the recording rules
(``configs/rules/recording.yml``) read a synthetic engine exactly as they read a real one:

- gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and
  ``vllm:kv_cache_usage_perc`` (a fraction, 1 = full, despite its name);
- counter ``vllm:num_preemptions`` (exposed as ``vllm:num_preemptions_total``);
- histograms, per finished request, ``vllm:request_queue_time_seconds`` (arrival to first
  scheduling), ``vllm:request_prefill_time_seconds`` (first scheduling to first token, any
  preemption included), ``vllm:request_decode_time_seconds`` (first to last token) and
  ``vllm:request_prompt_tokens``; per token after the first, ``vllm:inter_token_latency_seconds``.

Every series carries ``model_name`` (the served model) and ``engine`` (``"0"``: one engine
core). As in vLLM, requests that end before they finish (aborted, timed out, disconnected) leave
no per-request observation.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "INTER_TOKEN_LATENCY_BUCKETS",
    "REQUEST_LATENCY_BUCKETS",
    "VLLM_SERIES",
    "EngineMetrics",
    "request_tokens_buckets",
]

# vLLM 0.32's defaults (vllm/v1/metrics/buckets.py); tests/serving/test_vllm_engine.py compares.
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
INTER_TOKEN_LATENCY_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip

_LABELS = ("model_name", "engine")
_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
_HISTOGRAMS = (
    "vllm:request_queue_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:request_prompt_tokens",
)
#: Every series name these metrics expose (histograms as their three series).
VLLM_SERIES: frozenset[str] = frozenset(
    [*_GAUGES, "vllm:num_preemptions_total"]
    + [f"{name}_{part}" for name in _HISTOGRAMS for part in ("bucket", "sum", "count")]
)


def request_tokens_buckets(max_model_len: int) -> tuple[float, ...]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50 ... up to the context length.

    >>> request_tokens_buckets(1024)
    (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    """
    out: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_model_len:
                return tuple(out)
            out.append(mantissa * scale)
        scale *= 10


class EngineMetrics:
    """The ``vllm:*`` metrics of one engine, registered in ``registry``.

    The gauges read the engine's state when scraped (``running``, ``waiting``, ``kv_usage``),
    so they are never stale; the counter and the histograms are fed by the methods below.

    Examples
    --------
    >>> registry = CollectorRegistry()
    >>> metrics = EngineMetrics(registry, model_name="m", max_model_len=64,
    ...                         running=lambda: 2, waiting=lambda: 0, kv_usage=lambda: 0.25)
    >>> metrics.preempted()
    >>> labels = {"model_name": "m", "engine": "0"}
    >>> registry.get_sample_value("vllm:kv_cache_usage_perc", labels)
    0.25
    >>> registry.get_sample_value("vllm:num_preemptions_total", labels)
    1.0
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        model_name: str,
        max_model_len: int,
        running: Callable[[], float],
        waiting: Callable[[], float],
        kv_usage: Callable[[], float],
    ) -> None:
        values = (model_name, "0")
        docs = (
            "Number of requests in model execution batches.",
            "Number of requests waiting to be processed.",
            "KV-cache usage. 1 means 100 percent usage.",
        )
        for name, doc, read in zip(_GAUGES, docs, (running, waiting, kv_usage), strict=True):
            gauge = Gauge(name, doc, _LABELS, registry=registry)
            gauge.labels(*values).set_function(read)
        self._preemptions = Counter(
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            _LABELS,
            registry=registry,
        ).labels(*values)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, _LABELS, buckets=buckets, registry=registry).labels(*values)

        latency = REQUEST_LATENCY_BUCKETS
        self._queue = histogram(
            _HISTOGRAMS[0], "Histogram of time spent in WAITING phase for request.", latency
        )
        self._prefill = histogram(
            _HISTOGRAMS[1], "Histogram of time spent in PREFILL phase for request.", latency
        )
        self._decode = histogram(
            _HISTOGRAMS[2], "Histogram of time spent in DECODE phase for request.", latency
        )
        self._inter_token = histogram(
            _HISTOGRAMS[3],
            "Histogram of inter-token latency in seconds.",
            INTER_TOKEN_LATENCY_BUCKETS,
        )
        self._prompt_tokens = histogram(
            _HISTOGRAMS[4],
            "Number of prefill tokens processed.",
            request_tokens_buckets(max_model_len),
        )

    def preempted(self) -> None:
        """Count one preemption (a running sequence sent back to the queue)."""
        self._preemptions.inc()

    def token_gap(self, seconds: float) -> None:
        """Observe the time between two output tokens of one request."""
        self._inter_token.observe(seconds)

    def finished(
        self, *, queue_s: float, prefill_s: float, decode_s: float, prompt_tokens: int
    ) -> None:
        """Observe one request that finished (stop or length)."""
        self._queue.observe(queue_s)
        self._prefill.observe(prefill_s)
        self._decode.observe(decode_s)
        self._prompt_tokens.observe(prompt_tokens)
