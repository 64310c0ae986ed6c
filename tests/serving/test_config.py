"""Serving settings: defaults, environment, unknown keys and unsafe combinations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.config import ServingSettings


def test_defaults() -> None:
    settings = ServingSettings()
    assert (settings.host, settings.port, settings.engine) == ("127.0.0.1", 8080, "vllm")
    assert settings.metric_prefix == "qwen" and settings.admin_token.get_secret_value() == ""


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMWATCH_SERVING_PORT", "9001")
    monkeypatch.setenv("LLMWATCH_SERVING_METRIC_PREFIX", "llama")
    settings = ServingSettings()
    assert settings.port == 9001 and settings.metric_prefix == "llama"
    assert ServingSettings(port=9002).port == 9002  # arguments win


def test_body_limit_default_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServingSettings().max_body_bytes == 1024 * 1024
    monkeypatch.setenv("LLMWATCH_SERVING_MAX_BODY_BYTES", "4194304")
    assert ServingSettings().max_body_bytes == 4 * 1024 * 1024


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ValidationError, match="max_qeue"):
        ServingSettings(max_qeue=3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metric_prefix", "bad-prefix"),
        ("port", 70000),
        ("max_running", 0),
        ("json_prompt_pattern", "("),
        ("max_body_bytes", 100),  # bytes, not KiB or MiB: surely a unit mistake
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        ServingSettings(**{field: value})


def test_public_bind_needs_an_admin_token() -> None:
    with pytest.raises(ValidationError, match="admin_token"):
        ServingSettings(host="0.0.0.0")
    assert ServingSettings(host="0.0.0.0", admin_token="x").host == "0.0.0.0"
    assert ServingSettings(host="::1").host == "::1"
    assert ServingSettings(host="localhost").host == "localhost"
