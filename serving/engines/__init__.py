"""Inference engines behind one small async protocol (see :mod:`serving.engines.base`)."""
