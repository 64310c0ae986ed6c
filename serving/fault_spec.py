"""Fault specifications: one fault's kind, window and intensity, and the schedule file.

Schedule file (``llmwatch serve --faults FILE``), offsets and durations in seconds or as
``90s``/``5m``/``1h``; errors name the file, the entry and the key::

    faults:
      - {kind: latency, start: 60, duration: 120, intensity: 2.0}
      - {kind: latency, start: 10m, duration: 1m, intensity: 3, mode: proportional}
      - {kind: errors, start: 5m, duration: 1m, intensity: 0.3, note: bad deploy}
      - {kind: memory, start: 20m, duration: 5m, intensity: 512, ramp: 2m}

What ``intensity`` means for each kind is described in :mod:`serving.faults`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

__all__ = ["FaultKind", "FaultScheduleError", "FaultSpec", "load_schedule"]

FaultKind = Literal["latency", "slow_tokens", "errors", "corrupt_json", "memory", "stall"]


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        from llmwatch.durations import parse_duration

        return parse_duration(value)
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0, allow_inf_nan=False)]


class FaultSpec(BaseModel):
    """One fault: an entry of the schedule file or the body of ``POST /admin/faults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    start: Seconds = 0.0  # schedule: after server start; admin: after the request
    duration: Seconds | None = None  # None: until deleted (or until the server stops)
    intensity: float = Field(1.0, gt=0, allow_inf_nan=False)
    mode: Literal["fixed", "proportional"] = "fixed"  # latency only
    ramp: Seconds | None = None  # memory only: seconds to reach full size
    note: str = ""

    @model_validator(mode="after")
    def _check_kind_params(self) -> FaultSpec:
        if self.mode != "fixed" and self.kind != "latency":
            raise ValueError(f"mode: only latency faults have a mode, not {self.kind}")
        if self.ramp is not None and self.kind != "memory":
            raise ValueError(f"ramp: only memory faults have a ramp, not {self.kind}")
        if self.kind in ("errors", "corrupt_json") and self.intensity > 1:
            raise ValueError(f"intensity: a share in (0, 1] for {self.kind}, got {self.intensity}")
        if self.kind == "latency" and self.mode == "proportional" and self.intensity <= 1:
            raise ValueError(
                f"intensity: a factor above 1 for proportional latency, got {self.intensity}"
            )
        return self


class FaultScheduleError(ValueError):
    """The schedule file is malformed; the message names the file, entry and key."""


def _describe(error: ValidationError, where: str) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{where}.{key}: {message}" if key else f"{where}: {message}")
    return "; ".join(problems)


def load_schedule(path: Path) -> list[FaultSpec]:
    """Read and validate a schedule file (a ``faults:`` list, or a bare list)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise FaultScheduleError(f"{path}: not YAML: {exc}") from None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"faults"})
        if unknown:
            raise FaultScheduleError(f"{path}: unknown key {unknown[0]!r} (expected 'faults')")
        data = data.get("faults")
    if data is None:
        return []
    if not isinstance(data, list):
        raise FaultScheduleError(f"{path}: faults must be a list of entries")
    specs = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise FaultScheduleError(f"{path}: faults[{i}] must be a mapping")
        try:
            specs.append(FaultSpec.model_validate(entry))
        except ValidationError as exc:
            raise FaultScheduleError(f"{path}: {_describe(exc, f'faults[{i}]')}") from None
    return specs
