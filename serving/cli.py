"""``llmwatch serve``: run the instrumented OpenAI-compatible server.

Flags override ``LLMWATCH_SERVING_*`` environment variables, which override the defaults of
:class:`serving.config.ServingSettings`. The admin token is read from the environment only
(``LLMWATCH_SERVING_ADMIN_TOKEN``), so that it does not show in the process list.

vLLM starts its engine core in a spawned process, which re-imports the main module: the process
entry (``llmwatch/cli.py`` and the ``llmwatch`` console script) runs only under a
``__main__`` guard.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["build_engine", "register", "settings_from_args"]

# flag destination -> settings field
_FIELDS = {
    "engine": "engine",
    "model": "model",
    "host": "host",
    "port": "port",
    "metric_prefix": "metric_prefix",
    "faults": "faults_file",
    "served_model_name": "served_model_name",
    "max_model_len": "max_model_len",
    "max_running": "max_running",
    "max_queue": "max_queue",
    "request_timeout": "request_timeout_s",
    "max_body_bytes": "max_body_bytes",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "tensor_parallel_size": "tensor_parallel_size",
    "enforce_eager": "enforce_eager",
    "kv_cache_space_gb": "kv_cache_space_gb",
    "dtype": "dtype",
    "speed": "synthetic_speed",
    "seed": "synthetic_seed",
    "loop_share": "synthetic_loop_share",
    "kv_cache_tokens": "synthetic_kv_cache_tokens",
    "log_level": "log_level",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser(
        "serve",
        help="run the instrumented OpenAI-compatible LLM server",
        description="Serve /v1/completions, /v1/chat/completions, /v1/models, /health and "
        "/metrics with the vLLM engine (default) or the synthetic one, with output-quality "
        "checks and fault injection. Unset flags come from LLMWATCH_SERVING_* variables.",
    )
    p.add_argument("--engine", choices=["vllm", "synthetic"], help="default: vllm")
    p.add_argument("--model", help="local model folder (vllm)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--metric-prefix", help="metric name prefix (default qwen)")
    p.add_argument("--faults", type=Path, metavar="FILE", help="fault schedule (YAML)")
    p.add_argument("--served-model-name", help="model name shown to clients")
    p.add_argument("--max-model-len", type=int, help="context length (prompt + output tokens)")
    p.add_argument("--max-running", type=int, help="sequences generating at once")
    p.add_argument("--max-queue", type=int, help="requests waiting beyond --max-running; more: 429")
    p.add_argument("--request-timeout", type=float, metavar="SECONDS", help="504 after this")
    p.add_argument(
        "--max-body-bytes", type=int, metavar="BYTES", help="413 above this (default 1 MiB)"
    )
    p.add_argument("--gpu-memory-utilization", type=float, help="vllm: share of GPU memory")
    p.add_argument("--tensor-parallel-size", type=int, help="vllm: GPUs per model")
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, help="vllm")
    p.add_argument("--kv-cache-space-gb", type=int, help="vllm on CPU: KV cache size")
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="vllm: weight dtype (default auto: float32 on CPUs without bfloat16 units)",
    )
    p.add_argument("--speed", type=float, help="synthetic: time runs this many times faster")
    p.add_argument("--seed", type=int, help="synthetic: seed of the generated text")
    p.add_argument("--loop-share", type=float, help="synthetic: share of answers that loop")
    p.add_argument(
        "--kv-cache-tokens", type=int, help="synthetic: tokens the KV cache holds (default 32768)"
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_run_serve)


def settings_from_args(args: argparse.Namespace) -> Any:
    """:class:`~serving.config.ServingSettings` from the flags that were given, plus environment."""
    from serving.config import ServingSettings

    given = {field: getattr(args, dest) for dest, field in _FIELDS.items()}
    return ServingSettings(**{k: v for k, v in given.items() if v is not None})


def build_engine(settings: Any) -> Any:
    """The engine ``settings.engine`` names, configured from ``settings``."""
    if settings.engine == "synthetic":
        from serving.engines.synthetic import SyntheticEngine

        return SyntheticEngine(
            model_name=settings.served_model_name or "synthetic",
            max_model_len=settings.max_model_len,
            max_running=settings.max_running,
            speed=settings.synthetic_speed,
            seed=settings.synthetic_seed,
            loop_share=settings.synthetic_loop_share,
            kv_cache_tokens=settings.synthetic_kv_cache_tokens,
        )
    from serving.engines.vllm import VllmEngine  # heavy: only when serving with vLLM

    return VllmEngine(settings)


def _run_serve(args: argparse.Namespace) -> int:
    import logging
    import signal

    import uvicorn
    from prometheus_client import REGISTRY

    from serving.app import create_app

    settings = settings_from_args(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    engine = build_engine(settings)
    failures: list[BaseException] = []

    def stop_on_failure(exc: BaseException) -> None:
        failures.append(exc)
        server.should_exit = True

    # vLLM registers its vllm:* metrics in the global registry; export them beside ours.
    extra = [REGISTRY] if settings.engine == "vllm" else []
    app = create_app(settings, engine, extra_registries=extra, on_engine_failure=stop_on_failure)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # The admin API trusts the peer address: never take it from X-Forwarded-For.
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once shut down; a SIGTERM (systemd, docker,
    # kubernetes) is the normal way to stop a server, so it ends with status 0 here.
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run()
    if failures:
        logging.getLogger(__name__).error("exiting: the engine failed to start: %s", failures[0])
        return 1
    return 0
