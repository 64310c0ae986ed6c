"""The ``vllm`` engine: vLLM's async engine (``AsyncLLM``) in this process.

vLLM runs its engine core in a child process started by ``spawn`` on CPU, so the program that
creates this engine needs an ``if __name__ == "__main__":`` guard (``llmwatch serve`` has one).
Because the engine lives in this process, vLLM's own ``vllm:*`` metrics land in prometheus_client's
global ``REGISTRY``, which ``llmwatch serve`` exports beside the serving metrics.

Environment set by :meth:`VllmEngine.start` (before vLLM is imported): ``HF_HUB_OFFLINE=1`` and
no usage statistics (nothing may leave the machine); vLLM's cache and config folders inside
``settings.vllm_cache_dir``; ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache on CPU builds) from
``settings.kv_cache_space_gb``, default 1. Variables already set by the user are kept, except the
two offline switches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.engines.base import EngineError, GenerationChunk, GenerationRequest, PromptTooLong
from serving.model_setup import DEFAULT_MODEL_DIR

if TYPE_CHECKING:
    from serving.config import ServingSettings

__all__ = ["VllmEngine", "choose_dtype"]

# Prompts tokenised by count_prompt_tokens wait here for generate() (the HTTP layer counts first
# to validate the length); bounded so that requests rejected after counting cannot pile up.
_PROMPT_CACHE_SIZE = 512
_DEFAULT_KV_CACHE_GB = 1


# CPU flags of native bfloat16 matrix units; without them PyTorch emulates bfloat16 matmuls,
# measured ~2x slower than float32 on an AVX2-only CPU.
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_CPUINFO = Path("/proc/cpuinfo")


def choose_dtype(requested: str, *, on_cpu: bool, cpu_flags: frozenset[str]) -> str:
    """The dtype vLLM gets for ``requested`` (the ``dtype`` setting).

    Parameters
    ----------
    requested
        ``"auto"`` or an explicit dtype, which is kept as is.
    on_cpu
        Whether vLLM runs on the CPU.
    cpu_flags
        The CPU's feature flags (``/proc/cpuinfo``); read only when ``on_cpu``.

    Returns
    -------
    str
        ``"auto"`` (vLLM uses the model's dtype) on GPUs and on CPUs with native bfloat16 units,
        ``"float32"`` on other CPUs, or ``requested`` when it is not ``"auto"``.

    >>> choose_dtype("auto", on_cpu=True, cpu_flags=frozenset({"avx2"}))
    'float32'
    """
    if requested != "auto" or not on_cpu:
        return requested
    return "auto" if cpu_flags & _BF16_CPU_FLAGS else "float32"


def _cpu_flags() -> frozenset[str]:
    # Linux only; elsewhere no flags, which picks float32 (slower on bf16 CPUs, never wrong).
    try:
        text = _CPUINFO.read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _message_text(content: Any) -> str:
    # OpenAI content may be a list of parts; a text-only model reads only the text parts.
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class VllmEngine:
    """vLLM's ``AsyncLLM`` behind the :class:`~serving.engines.base.Engine` protocol.

    Parameters
    ----------
    settings
        Read: ``model`` (default: the CPU model that ``make model`` converts),
        ``served_model_name``, ``max_model_len``, ``max_running`` (vLLM ``max_num_seqs``),
        ``gpu_memory_utilization``, ``tensor_parallel_size``, ``enforce_eager`` (default: eager
        on CPU, compiled on GPU), ``dtype`` (see :func:`choose_dtype`), ``kv_cache_space_gb``
        and ``vllm_cache_dir``.

    Raises
    ------
    FileNotFoundError
        When the model folder has no ``config.json`` (run ``make model``).
    """

    def __init__(self, settings: ServingSettings) -> None:
        self._settings = settings
        self.model_path = Path(settings.model) if settings.model else DEFAULT_MODEL_DIR
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(
                f"model: {self.model_path} is not a Hugging Face model folder (no config.json); "
                "`make model` converts the CPU model into "
                f"{DEFAULT_MODEL_DIR}, or pass --model PATH"
            )
        self.model_name: str = settings.served_model_name or self.model_path.name
        self.max_model_len: int = settings.max_model_len
        self._llm: Any = None
        self._tokenizer: Any = None
        self._prompts: OrderedDict[str, list[int]] = OrderedDict()

    def _set_environment(self) -> None:
        s = self._settings
        cache = Path(s.vllm_cache_dir).resolve()
        # Forced: the model is local and vLLM's usage report would try to reach the internet.
        os.environ.update(HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
        os.environ.setdefault("VLLM_CACHE_ROOT", str(cache / "cache"))
        os.environ.setdefault("VLLM_CONFIG_ROOT", str(cache / "config"))
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
        if s.kv_cache_space_gb is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(s.kv_cache_space_gb)
        else:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(_DEFAULT_KV_CACHE_GB))

    def _build(self) -> Any:
        # Runs in a worker thread: loading the model and starting the engine core takes tens of
        # seconds, during which the server's event loop must keep answering /health.
        from vllm import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self._settings
        on_cpu = current_platform.is_cpu()
        eager = s.enforce_eager
        if eager is None:
            # The compiled mode takes minutes on CPU and its cache did not survive restarts.
            eager = on_cpu
        dtype = choose_dtype(
            s.dtype, on_cpu=on_cpu, cpu_flags=_cpu_flags() if on_cpu else frozenset()
        )
        args = AsyncEngineArgs(
            model=str(self.model_path),
            served_model_name=[self.model_name],
            max_model_len=s.max_model_len,
            max_num_seqs=s.max_running,
            gpu_memory_utilization=s.gpu_memory_utilization,
            tensor_parallel_size=s.tensor_parallel_size,
            enforce_eager=eager,
            dtype=dtype,
            disable_log_stats=False,  # keeps vLLM's Prometheus metrics on
        )
        return AsyncLLM.from_engine_args(args)

    async def start(self) -> None:
        """Start vLLM's engine core and load the model (tens of seconds on CPU)."""
        if self._llm is not None:
            return
        self._set_environment()
        # Handed over through a list rather than as the thread's result: the finished futures
        # would keep the engine alive until interpreter exit, where vLLM's __del__ fails noisily.
        built: list[Any] = []
        try:
            await asyncio.to_thread(lambda: built.append(self._build()))
        except Exception as exc:
            raise EngineError(f"vLLM failed to start with {self.model_path}: {exc}") from exc
        llm = built.pop()
        self._tokenizer = llm.get_tokenizer()
        self._llm = llm

    async def close(self) -> None:
        """Shut the engine core down (idempotent)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            # Stop reading outputs first: otherwise the reader logs the closed connection to the
            # engine core as a failure.
            handler = getattr(llm, "output_handler", None)
            if handler is not None:
                handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
            # shutdown() waits for the engine core's processes to exit.
            await asyncio.to_thread(llm.shutdown)

    def ready(self) -> bool:
        """True once started and while vLLM's engine core is alive."""
        return self._llm is not None and not self._llm.errored

    def _encode(self, request: GenerationRequest) -> list[int]:
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise EngineError("the vLLM engine is not started")
        if request.messages is not None:
            messages = [{**m, "content": _message_text(m.get("content"))} for m in request.messages]
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            # The template already wrote the special tokens.
            return list(tokenizer.encode(text, add_special_tokens=False))
        return list(tokenizer.encode(request.prompt or ""))

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Number of prompt tokens after the chat template (cached for :meth:`generate`)."""
        ids = self._encode(request)
        self._prompts[request.request_id] = ids
        while len(self._prompts) > _PROMPT_CACHE_SIZE:
            self._prompts.popitem(last=False)
        return len(ids)

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        structured = None
        if request.json_schema is not None:
            structured = StructuredOutputsParams(json=request.json_schema)
        elif request.json_object:
            structured = StructuredOutputsParams(json_object=True)
        return SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop) or None,
            seed=request.seed,
            structured_outputs=structured,
            output_kind=RequestOutputKind.DELTA,  # only the new text of each step
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the generation of ``request``.

        Raises
        ------
        PromptTooLong
            When the prompt plus ``max_tokens`` exceeds ``max_model_len``.
        EngineError
            When vLLM fails or the request was aborted.
        """
        llm = self._llm
        if llm is None:
            raise EngineError("the vLLM engine is not started")
        ids = self._prompts.pop(request.request_id, None)
        if ids is None:
            ids = self._encode(request)
        if len(ids) + request.max_tokens > self.max_model_len:
            raise PromptTooLong(
                f"prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) exceeds the "
                f"model's context of {self.max_model_len} tokens"
            )
        from vllm.inputs import tokens_input

        try:
            params = self._sampling_params(request)
        except ValueError as exc:  # e.g. a JSON schema vLLM cannot compile
            raise EngineError(f"vLLM rejected the sampling parameters: {exc}") from exc
        stream = llm.generate(tokens_input(ids), params, request.request_id)
        produced = 0
        try:
            async for output in stream:
                completion = output.outputs[0]
                produced += len(completion.token_ids)
                reason = completion.finish_reason if output.finished else None
                if reason == "abort":
                    raise EngineError(f"request {request.request_id} was aborted")
                if reason not in (None, "stop", "length"):
                    raise EngineError(f"vLLM finished request with {reason!r}")
                if completion.text or reason is not None:
                    yield GenerationChunk(
                        text=completion.text,
                        prompt_tokens=len(ids),
                        output_tokens=produced,
                        finish_reason=reason,
                    )
        except (EngineError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise EngineError(f"vLLM failed: {type(exc).__name__}: {exc}") from exc
        finally:
            # Closing vLLM's stream aborts the request inside the engine if it is still running
            # (the consumer stopped early: timeout, client disconnect).
            await stream.aclose()

    async def abort(self, request_id: str) -> None:
        """Abort ``request_id`` in vLLM's engine core; no-op when it is unknown or finished."""
        self._prompts.pop(request_id, None)
        if self._llm is not None:
            await self._llm.abort(request_id)
