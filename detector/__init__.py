"""llmwatch detector: seasonal baselines, isolation forests and calibrated anomaly scores."""

__version__ = "0.6.0"
