"""Helpers shared by the test suites (real servers, synthetic data); see ``servers``."""
