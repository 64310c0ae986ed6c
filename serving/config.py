"""Settings of the serving component (environment prefix ``LLMWATCH_SERVING_``).

Every field can come from the environment (``LLMWATCH_SERVING_PORT=9000``) or from keyword
arguments (the ``llmwatch serve`` flags); unknown keys are refused with an error naming them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_JSON_PROMPT_PATTERN", "ServingSettings", "is_loopback"]

# Requests whose prompt (or last user message) asks for a JSON answer in words count as JSON
# requests too, so that clients which do not send ``response_format`` are still checked.
DEFAULT_JSON_PROMPT_PATTERN = (
    r"(?i)\b(?:respond|reply|answer)\s+(?:only\s+)?(?:in|with)\s+(?:valid\s+)?json\b"
)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``).

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServingSettings(BaseSettings):
    """Configuration of ``llmwatch serve``: HTTP, engine, limits, quality checks and faults."""

    model_config = SettingsConfigDict(
        env_prefix="LLMWATCH_SERVING_", extra="forbid", validate_default=True
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Engine
    engine: Literal["vllm", "synthetic"] = "vllm"
    model: str | None = None  # local model folder (vllm); None: the engine's default
    served_model_name: str | None = None  # name in /v1/models and responses; None: engine's
    max_model_len: int = Field(4096, ge=16)
    max_running: int = Field(16, ge=1)  # sequences generating at once (vLLM max_num_seqs)
    max_queue: int = Field(64, ge=0)  # admitted requests waiting beyond max_running; more: 429
    request_timeout_s: float = Field(120.0, gt=0)
    default_max_tokens: int = Field(256, ge=1)
    # Request bodies over this are refused with 413 before they are read: a body is held and
    # parsed whole, on the event loop. 1 MiB holds a full 32k-token context even as JSON-escaped
    # non-Latin text (~9 bytes a token), or a 128k-token English one, plus a schema. At least
    # 1 KiB: less would refuse ordinary requests (surely a unit mistake).
    max_body_bytes: int = Field(1_048_576, ge=1024)

    # vLLM engine flags (read by serving.engines.vllm)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool | None = None  # None: the engine decides (eager on CPU)
    kv_cache_space_gb: int | None = Field(None, ge=1)  # VLLM_CPU_KVCACHE_SPACE on CPU
    # Weights and activations; "auto": float32 on CPUs without bfloat16 units, else the model's
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    vllm_cache_dir: Path = Path("var/vllm")  # VLLM_CACHE_ROOT/VLLM_CONFIG_ROOT, in the state folder

    # Synthetic engine
    synthetic_speed: float = Field(1.0, gt=0)  # time runs this many times faster; inf: no waits
    synthetic_seed: int = 0
    synthetic_loop_share: float = Field(0.0, ge=0, le=1)  # answers that degenerate into loops
    # Tokens its KV cache holds (at least max_model_len); None: 32,768 or max_model_len if larger
    synthetic_kv_cache_tokens: int | None = Field(None, ge=16)

    # Metrics
    metric_prefix: str = "qwen"
    gpu_poll_interval_s: float = Field(5.0, gt=0)

    # Quality checks
    json_prompt_pattern: str = DEFAULT_JSON_PROMPT_PATTERN  # empty: response_format only
    loop_max_ngram: int = Field(32, ge=1, le=1024)
    loop_min_repeats: int = Field(5, ge=2)
    loop_min_words: int = Field(30, ge=2)

    # Fault injection
    faults_file: Path | None = None
    fault_seed: int = 0
    fault_memory_max_mb: int = Field(2048, ge=1)
    admin_token: SecretStr = SecretStr("")

    @field_validator("metric_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", value):
            raise ValueError(
                f"{value!r} is not a Prometheus metric name prefix ([a-zA-Z_][a-zA-Z0-9_]*)"
            )
        return value

    @field_validator("json_prompt_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _refuse_open_admin(self) -> ServingSettings:
        # The admin API only answers loopback clients, but a server reachable from elsewhere
        # must not rely on that alone: insist on a token.
        if not is_loopback(self.host) and not self.admin_token.get_secret_value():
            raise ValueError(
                f"admin_token: an empty admin token is refused when host={self.host!r} is not a "
                "loopback address (set LLMWATCH_SERVING_ADMIN_TOKEN)"
            )
        return self
