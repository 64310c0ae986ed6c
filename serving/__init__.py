"""Instrumented OpenAI-compatible LLM server (vLLM and synthetic engines).

The package is reserved by the project layout; its modules arrive with the serving issue. Nothing
here is imported by the detector.
"""
