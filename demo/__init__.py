"""The monitoring stack around the detector: Prometheus, Alertmanager and Grafana configuration.

The readable defaults live in the repository's ``configs/`` folder; this package renders variants
of them (other ports, shorter intervals) for the demo and the tests, generates the Grafana
dashboard from the recording rules, and names the series the stack relies on.
"""

__all__: list[str] = []
