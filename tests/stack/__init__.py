"""Tests of the monitoring stack: configs, rules, dashboard (a package: its conftest is its own)."""

__all__: list[str] = []
