"""Configuration of the detector service: where Prometheus is, what to watch, when to refit.

One pydantic-settings model, :class:`DetectorSettings`, read from a YAML file (by default
``configs/detector.yaml``) with environment overrides (prefix ``LLMWATCH_DETECTOR_``, nested keys
joined by ``__``, e.g. ``LLMWATCH_DETECTOR_PROMETHEUS__URL``) and command-line overrides on top.
Unknown keys are errors that name the key. Durations accept seconds or text such as ``30s``,
``12h``, ``30d``.

Refit cadence and window default to what the evaluation measured best (every 12 hours on the last
30 days, ``docs/evaluation.md``), not the 6 hours / 14 days first proposed; both are settings.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detector.core.defaults import DEFAULT_FAMILIES, FAMILIES, BacktestSettings
from detector.core.signal_roles import auto_explained_by
from detector.core.timeutil import DAY_S
from llmwatch.durations import parse_duration

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigError",
    "DetectorSettings",
    "PrometheusSettings",
    "Shard",
    "SignalSettings",
    "ThresholdSettings",
    "load_settings",
]

DEFAULT_CONFIG = Path("configs/detector.yaml")
_DEFAULTS = BacktestSettings()
_yaml_path: ContextVar[Path | None] = ContextVar("_yaml_path", default=None)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the key."""


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrometheusSettings(_Strict):
    """Any Prometheus-compatible query API (Prometheus, VictoriaMetrics, Thanos, Mimir)."""

    url: str = "http://127.0.0.1:9090"
    bearer_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    # A private CA is trusted through REQUESTS_CA_BUNDLE; turning verification off is explicit.
    tls_verify: bool = True
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSettings:
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("set either bearer_token or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        return self


class ThresholdSettings(_Strict):
    """Hysteresis of the ``anomalous`` decision, and the score's refractory period (in steps)."""

    enter: float = Field(0.95, ge=0.0, le=1.0)
    leave: float = Field(0.5, ge=0.0, le=1.0)
    min_points: int = Field(1, ge=1, le=10_000)
    refractory: int = Field(20, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdSettings:
        if self.leave > self.enter:
            raise ValueError(f"leave={self.leave} must not exceed enter={self.enter}")
        return self


class SignalSettings(_Strict):
    """One signal: a PromQL query whose every returned series is scored on its own."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
    query: str = Field(min_length=1)
    step: Duration = 60.0
    direction: Literal["up", "down", "both"] = "both"
    seasonality: Literal["auto", "daily", "weekly", "none"] = "auto"
    detectors: tuple[str, ...] = DEFAULT_FAMILIES
    thresholds: ThresholdSettings = ThresholdSettings()
    # A ratio's request rate (another signal, per second): trials per row = rate x step, and
    # the ratio is scored as counts (detector.core.families.counts).
    denominator: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
    # Seconds a new level must hold before the expectation and band accept it as normal: the
    # signal stays anomalous until then, or until it returns into its band.
    accept_after: Duration = 2 * 3600.0
    # Load signals whose values this signal's expectation follows (detector.core.load); unset:
    # a latency-like signal follows the configured request rate and tokens per request, any
    # other signal time of day only; []: time of day only.
    explained_by: list[Annotated[str, Field(pattern=_NAME)]] | None = None

    @field_validator("step")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        # Range queries are sent with whole-second bounds; the step grid must match them.
        if value != int(value):
            raise ValueError(f"step must be a whole number of seconds, got {value}")
        return value

    @field_validator("detectors")
    @classmethod
    def _families(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown detector families {unknown}; choose from {list(FAMILIES)}")
        if "seasonal" not in value:
            raise ValueError("detectors must include 'seasonal': the others score its residuals")
        return tuple(dict.fromkeys(value))

    def ensemble_params(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~detector.core.ensemble.Ensemble` for this signal."""
        return {
            "directions": self.direction,
            "families": self.detectors,
            "seasonality": self.seasonality,
            "enter": self.thresholds.enter,
            "leave": self.thresholds.leave,
            "min_points": self.thresholds.min_points,
            "refractory": self.thresholds.refractory,
            "accept_after": self.accept_after,
        }


@dataclass(frozen=True)
class Shard:
    """Replica ``index`` of ``count``: owns the series whose stable hash falls on it.

    >>> shards = [Shard(i, 3) for i in range(3)]
    >>> sum(s.owns("rps", {"model": "qwen"}) for s in shards)
    1
    """

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` with ``0 <= i < n``."""
        head, sep, tail = str(text).partition("/")
        try:
            shard = cls(int(head), int(tail)) if sep else None
        except ValueError:
            shard = None
        if shard is None or not 0 <= shard.index < shard.count:
            raise ValueError(f"shard {text!r} must be i/n with 0 <= i < n, e.g. 0/1 or 2/4")
        return shard

    def owns(self, signal: str, labels: Mapping[str, str]) -> bool:
        """Whether this replica scores the series; the same answer on every machine and run."""
        if self.count == 1:
            return True
        text = signal + "\0" + "\0".join(f"{k}={labels[k]}" for k in sorted(labels))
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class _YamlSource(PydanticBaseSettingsSource):
    """The YAML file named by :func:`load_settings` (lowest priority)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _yaml_path.get()
        if path is None:
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        return data


class DetectorSettings(BaseSettings):
    """Everything the detector service and ``llmwatch train`` are configured with."""

    model_config = SettingsConfigDict(
        env_prefix="LLMWATCH_DETECTOR_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    prometheus: PrometheusSettings = PrometheusSettings()
    interval: Duration = 30.0
    retrain_interval: Duration = _DEFAULTS.refit_every
    training_window: Duration = _DEFAULTS.training_window
    min_train_points: int = Field(_DEFAULTS.min_train_points, ge=3)
    min_train_span: Annotated[float, BeforeValidator(parse_duration)] = _DEFAULTS.min_train_span
    # After an outage the missed range is pulled and scored, up to this far back.
    max_backfill: Duration = DAY_S
    # A series with no point for this long is stale: its gauges go, it is no longer scored.
    stale_after: Duration = 300.0
    # After the source was unreachable, rows up to this long after it answers again count as
    # missing: a restarted Prometheus evaluates rules before its first scrape, and rate windows
    # straddle its gap, so those values are artefacts (the recording rules' window; 0: off).
    recovery_settle: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 60.0
    # Series tracked per signal at most (memory, /metrics and the API stay bounded); more are
    # refused with a warning and counted in llmwatch_series_refused.
    max_series: int = Field(10_000, ge=1, le=10_000_000)
    # Closed events older than this are removed from the history, once an hour.
    history_retention: Duration = 90 * DAY_S
    # Model versions kept per signal after each fit (the current one and a pinned one always).
    model_versions_kept: int = Field(10, ge=1, le=10_000)
    registry_root: Path = Path("models")
    history_db: Path = Path("var/detector/history.sqlite")
    # A database URL instead of the SQLite file: postgresql://user:password@host:5432/db is
    # the history that sharded replicas share (each writes its own series; all read every
    # event). Unset: the file at history_db.
    history_url: SecretStr | None = None
    api_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(9105, ge=1, le=65535)
    shard: str = "0/1"
    signals: list[SignalSettings] = Field(default_factory=list)

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, value: str) -> str:
        return str(Shard.parse(value))

    @field_validator("history_url")
    @classmethod
    def _check_history_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # Here, not at the top: reading settings should not load SQLAlchemy.
            from detector.service.history_db import database_url

            database_url(value.get_secret_value())  # ValueError naming history_url
        return value

    @field_validator("signals")
    @classmethod
    def _unique_names(cls, value: list[SignalSettings]) -> list[SignalSettings]:
        names = [s.name for s in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"signal names must be unique; repeated: {twice}")
        for sig in value:
            if sig.denominator is not None and sig.denominator not in names:
                raise ValueError(
                    f"signal {sig.name!r}: denominator {sig.denominator!r} is not a configured "
                    f"signal; configured: {names}"
                )
            if sig.denominator == sig.name:
                raise ValueError(f"signal {sig.name!r}: denominator must be another signal")
            unknown = [n for n in sig.explained_by or () if n not in names or n == sig.name]
            if unknown:
                raise ValueError(
                    f"signal {sig.name!r}: explained_by {unknown} must name other configured "
                    f"signals; configured: {names}"
                )
        return value

    @model_validator(mode="after")
    def _safe_bind(self) -> DetectorSettings:
        # The retrain endpoint is the one write; off loopback it must not be open to anyone.
        if not _is_loopback(self.host) and not (
            self.api_token and self.api_token.get_secret_value()
        ):
            raise ValueError(f"api_token is required when binding {self.host!r} (not loopback)")
        return self

    @property
    def history_location(self) -> Path | str:
        """Where the event history lives: ``history_url`` when set, else the ``history_db`` file."""
        return self.history_url.get_secret_value() if self.history_url else self.history_db

    @property
    def shard_spec(self) -> Shard:
        """The parsed ``shard`` setting."""
        return Shard.parse(self.shard)

    def scoring_order(self) -> list[str]:
        """Signal names, denominators and load signals first: a signal scored after them has
        their rows."""
        used = {s.denominator for s in self.signals}
        used |= {n for s in self.signals for n in self.load_signals(s.name)}
        return sorted((s.name for s in self.signals), key=lambda name: name not in used)

    def load_signals(self, name: str) -> tuple[str, ...]:
        """The load signals ``name``'s expectation follows (its ``explained_by``, resolved).

        A load signal that follows load itself is left out, so the order above is well defined.
        """
        sig = self.signal(name)
        if sig.explained_by is not None:
            chosen = tuple(sig.explained_by)
        else:
            chosen = auto_explained_by(s.name for s in self.signals).get(name, ())
        return tuple(n for n in chosen if not self.signal(n).explained_by)

    def signal(self, name: str) -> SignalSettings:
        """The signal called ``name``; ``KeyError`` naming the known ones otherwise."""
        for sig in self.signals:
            if sig.name == name:
                return sig
        raise KeyError(f"unknown signal {name!r}; configured: {[s.name for s in self.signals]}")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Command-line overrides, then the environment, then the YAML file."""
        return init_settings, env_settings, _YamlSource(settings_cls)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> DetectorSettings:
    """Read the YAML at ``path`` (none: environment and defaults only), then apply ``overrides``.

    ``overrides`` are keyword arguments of :class:`DetectorSettings`; a nested one is a dict
    merged into the file's (``prometheus={"url": ...}``). Raises :class:`ConfigError` naming the
    file and every offending key.
    """
    where = str(path) if path is not None else "detector settings"
    token = _yaml_path.set(Path(path) if path is not None else None)
    try:
        return DetectorSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None
    finally:
        _yaml_path.reset(token)
