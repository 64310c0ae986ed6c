"""HTTP routers of the serving app: OpenAI endpoints, admin (faults), health and metrics."""
