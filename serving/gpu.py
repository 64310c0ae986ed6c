"""GPU memory through NVML, polled in a background thread and exported at scrape time.

Where NVML cannot initialise (no GPU, no driver) the poller stops after one try and the collector
yields nothing, so ``<prefix>_gpu_memory_used_mb`` and ``..._total_mb`` are absent, not zero.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["GpuMemoryCollector", "GpuMemoryPoller", "read_nvml_memory"]

_log = logging.getLogger(__name__)
_MIB = 1024 * 1024

# device index -> (used MiB, total MiB)
Readings = dict[str, tuple[float, float]]


def read_nvml_memory() -> Readings:
    """Used and total memory of every visible NVIDIA device, in MiB; raises when NVML fails."""
    import pynvml  # nvidia-ml-py; imported here so that importing serving stays light

    readings: Readings = {}
    for index in range(pynvml.nvmlDeviceGetCount()):
        info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
        readings[str(index)] = (info.used / _MIB, info.total / _MIB)
    return readings


def _nvml_init() -> Callable[[], None]:
    import pynvml

    pynvml.nvmlInit()
    return pynvml.nvmlShutdown


class GpuMemoryPoller:
    """Reads GPU memory every ``interval_s`` seconds in a daemon thread.

    ``init`` returns the shutdown function and raises when there is no GPU; ``read`` returns the
    readings. Both default to NVML.
    """

    def __init__(
        self,
        *,
        interval_s: float = 5.0,
        init: Callable[[], Callable[[], None]] = _nvml_init,
        read: Callable[[], Readings] = read_nvml_memory,
    ) -> None:
        self.interval_s = interval_s
        self._init = init
        self._read = read
        self._readings: Readings = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def readings(self) -> Readings:
        """The latest readings (empty where there is no GPU)."""
        return self._readings

    def start(self) -> None:
        """Start polling (idempotent)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gpu-memory-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        try:
            shutdown = self._init()
        except Exception as exc:  # any NVML failure means "no GPU series"
            _log.info("no GPU memory metrics: NVML unavailable (%s)", exc)
            return
        try:
            while True:
                try:
                    self._readings = self._read()
                except Exception as exc:
                    # A device that stops answering drops out rather than freezing old values.
                    _log.warning("reading GPU memory failed: %s", exc)
                    self._readings = {}
                if self._stop.wait(self.interval_s):
                    break
        finally:
            self._readings = {}
            shutdown()


class GpuMemoryCollector(Collector):
    """Exports the poller's latest readings as ``<prefix>_gpu_memory_{used,total}_mb{device}``."""

    def __init__(self, poller: GpuMemoryPoller, prefix: str) -> None:
        self._poller = poller
        self._prefix = prefix

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the two families, or nothing when there are no readings."""
        readings = self._poller.readings
        if not readings:
            return
        used = GaugeMetricFamily(
            f"{self._prefix}_gpu_memory_used_mb", "GPU memory in use (MiB)", labels=["device"]
        )
        total = GaugeMetricFamily(
            f"{self._prefix}_gpu_memory_total_mb", "GPU memory in total (MiB)", labels=["device"]
        )
        for device, (used_mb, total_mb) in sorted(readings.items()):
            used.add_metric([device], used_mb)
            total.add_metric([device], total_mb)
        yield used
        yield total

    def describe(self) -> list[GaugeMetricFamily]:
        """Nothing: the families may be absent, so the registry must not reserve their names."""
        return []
