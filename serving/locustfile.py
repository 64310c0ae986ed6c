"""Locust load test of the llmwatch server (for people who drive load with Locust).

Run it against a server started with ``llmwatch serve``::

    locust -f serving/locustfile.py --host http://127.0.0.1:8080 --headless -u 8 -r 2 -t 5m

Each simulated user sends chat requests drawn from :mod:`serving.workload` (the same mix as
``llmwatch loadgen``): plain answers (explanations, code, multi-turn chats) and JSON answers.
A JSON answer that does not parse, or does not match its schema, is reported as a Locust failure,
like the server's ``json_parse_error``. ``--max-tokens`` caps every answer (default 128).
"""

from __future__ import annotations

import json
import random
from typing import Any

from locust import HttpUser, between, events, task

from serving.quality import extract_json
from serving.workload import KINDS, ChatRequest, sample_request

__all__ = ["ChatUser"]

_PLAIN = {k: w for k, w in KINDS.items() if not k.startswith("json")}
_JSON = {k: w for k, w in KINDS.items() if k.startswith("json")}


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--max-tokens", type=int, default=128, help="cap on every answer")


def _json_problem(request: ChatRequest, text: str) -> str | None:
    try:
        value = json.loads(extract_json(text))
    except ValueError as exc:
        return f"not JSON: {exc}"
    if request.kind == "json_object" and not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    if request.json_schema is not None:
        import jsonschema

        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(request.json_schema).iter_errors(value)
        )
        if error is not None:
            return f"does not match the schema: {error.message}"
    return None


class ChatUser(HttpUser):
    """A chat client: a request, a short pause to read the answer, the next request."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.max_tokens = self.environment.parsed_options.max_tokens

    def _draw(self, kinds: dict[str, float]) -> ChatRequest:
        kind = self.rng.choices(list(kinds), weights=list(kinds.values()))[0]
        return sample_request(self.rng, kind=kind, max_tokens=self.max_tokens)

    def _post(self, request: ChatRequest) -> None:
        with self.client.post(
            "/v1/chat/completions",
            json=request.body,
            name=f"chat:{request.kind}",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            text = response.json()["choices"][0]["message"]["content"] or ""
            problem = _json_problem(request, text) if request.wants_json else None
            if problem is not None:
                response.failure(problem)
            else:
                response.success()

    @task(round(100 * sum(_PLAIN.values())))
    def chat(self) -> None:
        """Explanations, code and multi-turn chats."""
        self._post(self._draw(_PLAIN))

    @task(round(100 * sum(_JSON.values())))
    def json_answer(self) -> None:
        """JSON answers: ``response_format`` json_object or json_schema, or asked in words."""
        self._post(self._draw(_JSON))
