"""Instrumented OpenAI-compatible LLM server (vLLM and synthetic engines).

Entry points: :func:`serving.app.create_app` (the FastAPI app around any
:class:`~serving.engines.base.Engine`) and ``llmwatch serve`` (:mod:`serving.cli`). Metrics are
in :mod:`serving.metrics`, output checks in :mod:`serving.quality`, fault injection in
:mod:`serving.faults`, the per-request logic in :mod:`serving.service`. Nothing here is imported
by the detector.
"""
