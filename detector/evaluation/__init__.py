"""Evaluation of anomaly detectors against labelled benchmarks."""
