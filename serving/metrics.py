"""The serving metrics (contract: DESIGN.md §3) and the ``/metrics`` exposition.

Names, with ``<p>`` the configurable prefix (default ``qwen``):

- ``<p>_requests_total{status}``: status in ``success``, ``error``, ``timeout``, ``rejected``,
  ``json_parse_error``; every request to a generation endpoint is counted exactly once;
- ``<p>_inference_duration_seconds``, ``<p>_time_to_first_token_seconds``,
  ``<p>_time_per_output_token_seconds``: histograms, buckets 10 ms ... 120 s;
- ``<p>_output_tokens``, ``<p>_prompt_tokens``: histograms of tokens per request;
- ``<p>_requests_in_flight``: gauge of admitted requests not finished yet (running or waiting);
- ``<p>_output_finish_total{reason}``: reason in ``stop``, ``length``, ``loop``;
- ``<p>_gpu_memory_used_mb{device}``, ``<p>_gpu_memory_total_mb{device}``: NVML readings,
  absent (not zero) without a GPU;
- ``<p>_fault_active{kind}``: 1 while an injected fault of that kind runs;
- ``process_*`` and ``python_*`` from the standard collectors.

Every label value is created at start, so each series exists (at 0) before its first event.
Building :class:`ServingMetrics` turns off prometheus_client's ``*_created`` series
(process-wide: the switch is global), so that ``/metrics`` carries exactly the names above.

**Merging with other registries.** vLLM registers its ``vllm:*`` metrics in prometheus_client's
global ``REGISTRY``. :class:`MergedRegistry` collects the app's registry first and then each extra
registry, dropping any family whose name was already produced (the global registry carries its
own ``process_*``/``python_*`` collectors, which would otherwise appear twice).
``create_app(..., extra_registries=[prometheus_client.REGISTRY])`` turns this on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from serving.gpu import GpuMemoryCollector, GpuMemoryPoller

__all__ = [
    "FAULT_KINDS",
    "FINISH_REASONS",
    "LATENCY_BUCKETS",
    "STATUSES",
    "TOKEN_BUCKETS",
    "MergedRegistry",
    "ServingMetrics",
]

Status = Literal["success", "error", "timeout", "rejected", "json_parse_error"]
STATUSES: tuple[str, ...] = ("success", "error", "timeout", "rejected", "json_parse_error")
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "loop")
FAULT_KINDS: tuple[str, ...] = (
    "latency",
    "slow_tokens",
    "errors",
    "corrupt_json",
    "memory",
    "stall",
)
# LLM latencies: per-token times of ~10-100 ms up to multi-minute generations.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 7.5,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
)  # fmt: skip
TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768,
)  # fmt: skip


def _latency_histograms(
    p: str, registry: CollectorRegistry
) -> tuple[Histogram, Histogram, Histogram]:
    """End-to-end duration, time to first token and time per output token, in this order."""
    return (
        Histogram(
            f"{p}_inference_duration_seconds",
            "End-to-end request duration",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        Histogram(
            f"{p}_time_to_first_token_seconds",
            "Time from request arrival to the first output token",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        Histogram(
            f"{p}_time_per_output_token_seconds",
            "Mean time between output tokens of a request, after the first",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
    )


def _token_histograms(p: str, registry: CollectorRegistry) -> tuple[Histogram, Histogram]:
    """Output and prompt tokens per request, in this order."""
    return (
        Histogram(
            f"{p}_output_tokens",
            "Output tokens per request",
            buckets=TOKEN_BUCKETS,
            registry=registry,
        ),
        Histogram(
            f"{p}_prompt_tokens",
            "Prompt tokens per request",
            buckets=TOKEN_BUCKETS,
            registry=registry,
        ),
    )


class ServingMetrics:
    """The serving metrics, registered in ``registry`` with names prefixed ``prefix``.

    Parameters
    ----------
    registry
        Where the metrics live (tests pass a fresh one).
    prefix
        Metric name prefix.
    gpu_poll_interval_s
        Seconds between NVML readings (the poller runs between :meth:`start` and :meth:`stop`).
    process_collectors
        Also register the process, platform and GC collectors.

    Examples
    --------
    >>> registry = CollectorRegistry()
    >>> metrics = ServingMetrics(registry, prefix="demo")
    >>> metrics.count("success")
    >>> registry.get_sample_value("demo_requests_total", {"status": "success"})
    1.0
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str = "qwen",
        *,
        gpu_poll_interval_s: float = 5.0,
        process_collectors: bool = True,
    ) -> None:
        self.registry = registry
        self.prefix = prefix
        disable_created_metrics()
        p = prefix
        self.requests = Counter(
            f"{p}_requests", "Generation requests by outcome", ["status"], registry=registry
        )
        self.inference_duration, self.time_to_first_token, self.time_per_output_token = (
            _latency_histograms(p, registry)
        )
        self.output_tokens, self.prompt_tokens = _token_histograms(p, registry)
        self.in_flight = Gauge(
            f"{p}_requests_in_flight", "Admitted requests not finished yet", registry=registry
        )
        self.output_finish = Counter(
            f"{p}_output_finish",
            "Completed generations by finish reason",
            ["reason"],
            registry=registry,
        )
        self.fault_active = Gauge(
            f"{p}_fault_active",
            "1 while an injected fault of this kind runs",
            ["kind"],
            registry=registry,
        )
        self._status_children = {s: self.requests.labels(s) for s in STATUSES}
        self._finish_children = {r: self.output_finish.labels(r) for r in FINISH_REASONS}
        for kind in FAULT_KINDS:
            self.fault_active.labels(kind).set(0)
        self.gpu_poller = GpuMemoryPoller(interval_s=gpu_poll_interval_s)
        registry.register(GpuMemoryCollector(self.gpu_poller, prefix))
        if process_collectors:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def start(self) -> None:
        """Start the background GPU memory poller."""
        self.gpu_poller.start()

    def stop(self) -> None:
        """Stop the GPU memory poller."""
        self.gpu_poller.stop()

    def count(self, status: Status) -> None:
        """Count one request with its final ``status``."""
        self._status_children[status].inc()

    def finished(self, reason: str) -> None:
        """Count one completed generation with finish ``reason`` (stop, length or loop)."""
        self._finish_children[reason].inc()

    def set_fault_active(self, kind: str, active: bool) -> None:
        """Mark injected faults of ``kind`` as running or not."""
        self.fault_active.labels(kind).set(1.0 if active else 0.0)


class MergedRegistry:
    """Collects several registries as one, the first occurrence of a family name winning.

    Pass it to :func:`prometheus_client.generate_latest` like a registry.
    """

    def __init__(self, primary: CollectorRegistry, extra: Sequence[CollectorRegistry] = ()) -> None:
        self._registries = [primary, *(r for r in extra if r is not primary)]

    def collect(self) -> Iterator[Metric]:
        """Yield the families of every registry once per name."""
        seen: set[str] = set()
        for registry in self._registries:
            for family in registry.collect():
                if family.name not in seen:
                    seen.add(family.name)
                    yield family

    def exposition(self) -> bytes:
        """The Prometheus text format of all families."""
        return generate_latest(self)  # type: ignore[arg-type]
