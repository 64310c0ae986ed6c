"""Detector families, one per module."""
