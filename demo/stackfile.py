"""``stack.json``: where a running demo's components are, for the notebooks and other tools.

``llmwatch demo`` writes it into its state folder (``var/demo/stack.json`` by default) once the
whole stack is up, and removes it when it stops. Its keys are :data:`STACK_FIELDS`, e.g.::

    {"prometheus_url": "http://127.0.0.1:9090", "api_url": "http://127.0.0.1:9105",
     "grafana_url": null, "alertmanager_url": "http://127.0.0.1:9093",
     "serving_url": "http://127.0.0.1:8080", "webhook_url": "http://127.0.0.1:5001/alerts",
     "config": "/abs/var/demo/config/detector.yaml",
     "registry_root": "/abs/var/demo/detector/models", "step": 15.0, "history_days": 4.0,
     "started_at": 1767571200.0, "ready_at": 1767571400.0, "stops_at": 1767571920.0,
     "pid": 4242}

Paths are absolute, times unix seconds (``stops_at`` null when the demo has no end), ``step``
the detector's query step in seconds. A demo killed before it could clean up leaves the file
behind: :func:`stack_is_running` tells by its ``pid``. Nothing in the detector imports the demo,
so readers outside it (the notebooks' workbench) parse the JSON themselves.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from demo.launch import StackLauncher

__all__ = [
    "DEFAULT_STACK_FILE",
    "STACK_FIELDS",
    "STACK_FILE_NAME",
    "StackInfo",
    "describe_stack",
    "read_stack_file",
    "remove_stack_file",
    "stack_is_running",
    "write_stack_file",
]

STACK_FILE_NAME = "stack.json"
# Relative to the repository root, where `make demo` runs `llmwatch demo`.
DEFAULT_STACK_FILE = Path("var/demo") / STACK_FILE_NAME


@dataclass(frozen=True, kw_only=True)
class StackInfo:
    """What ``stack.json`` holds; see the module docstring."""

    prometheus_url: str
    api_url: str  # the detector's REST API (``/api/v1/...``, ``/health``)
    grafana_url: str | None  # the demo runs no Grafana: null, kept so readers see one schema
    alertmanager_url: str | None
    serving_url: str  # the OpenAI-compatible app (``/v1/...``)
    webhook_url: str | None
    config: str  # the detector configuration the demo's detector reads
    registry_root: str  # the model registry that detector reads: publish here to be served
    step: float
    history_days: float
    started_at: float
    ready_at: float
    stops_at: float | None
    pid: int  # the `llmwatch demo` process


STACK_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StackInfo))


def describe_stack(
    stack: StackLauncher, *, started_at: float, stops_at: float | None = None
) -> StackInfo:
    """What ``stack.json`` says about ``stack``, whose detector has been started; ready now."""
    from detector.service.config import load_settings

    config = stack.detector_config_path.resolve()
    return StackInfo(
        prometheus_url=stack.url("prometheus"),
        api_url=stack.url("detector"),
        grafana_url=None,
        alertmanager_url=stack.url("alertmanager"),
        serving_url=stack.url("serving"),
        webhook_url=stack.url("webhook"),
        config=str(config),
        # As the detector child reads it: the file, plus the environment it inherits.
        registry_root=str(load_settings(config).registry_root.resolve()),
        step=stack.options.step,
        history_days=stack.options.history_days,
        started_at=started_at,
        ready_at=time.time(),
        stops_at=stops_at,
        pid=os.getpid(),
    )


def write_stack_file(path: Path, info: StackInfo) -> Path:
    """Write ``info`` to ``path`` atomically (a reader never sees half a file); returns it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            json.dump(asdict(info), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_stack_file(path: Path = DEFAULT_STACK_FILE) -> StackInfo | None:
    """The stack ``path`` describes; None when there is no such file (no demo running).

    Raises ``ValueError`` naming the file when it is not a stack file (keys missing, not JSON);
    keys it does not know are ignored, so an older reader accepts a newer file.
    """
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    missing = [name for name in STACK_FIELDS if name not in data]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    return StackInfo(**{name: data[name] for name in STACK_FIELDS})


def remove_stack_file(path: Path) -> None:
    """Remove ``path`` if it is there (the demo is stopping)."""
    Path(path).unlink(missing_ok=True)


def stack_is_running(info: StackInfo) -> bool:
    """Whether the demo that wrote ``info`` still runs (on this machine)."""
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
