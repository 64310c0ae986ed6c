"""What a production chat service receives, and when: the prompt mix and the traffic shapes.

Shared by ``llmwatch loadgen`` (:mod:`serving.loadgen`) and the Locust file
(``serving/locustfile.py``). The mix follows a chat assistant's traffic: explanations, code,
JSON answers (``response_format`` ``json_object`` and ``json_schema``, and JSON asked for in
words only, which the server's quality check catches when the model ignores it), and multi-turn
chats. Everything is drawn from a seeded :class:`random.Random`, so a run can be replayed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "ChatRequest", "arrival_times", "daily_rate_factor", "sample_request"]

_TOPICS = (
    "how a hash map handles collisions", "what a Kubernetes pod is",
    "the difference between TCP and UDP", "why the sky is blue",
    "how vaccines train the immune system",
    "what inflation is", "how gradient descent finds a minimum", "the CAP theorem",
    "how HTTPS keeps a connection private", "what a p99 latency tells an SRE",
    "how a bloom filter works", "why databases use B-trees",
)  # fmt: skip
_CODE_TASKS = (
    "reverses the words of a sentence", "checks whether a number is prime",
    "merges two sorted lists", "parses an ISO-8601 date", "computes a moving average",
    "counts word frequencies in a text", "flattens a nested list", "validates an e-mail address",
)  # fmt: skip
_LANGUAGES = ("Python", "Python", "Python", "Go", "JavaScript", "SQL")
_PEOPLE = (
    ("Alice Martin", "Lyon", 34), ("Bob Chen", "Toronto", 41), ("Carla Diaz", "Madrid", 27),
    ("Dmitri Ivanov", "Riga", 52), ("Esther Okafor", "Lagos", 38), ("Farid Haddad", "Beirut", 45),
)  # fmt: skip
_REVIEWS = (
    "The battery lasts two days and the screen is gorgeous.",
    "It broke after a week and support never answered.",
    "Does the job, nothing more, nothing less.",
    "Shipping was slow but the quality surprised me.",
    "Absolutely love it, I bought a second one for my sister.",
)
_SENTIMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number"},
    },
    "required": ["sentiment", "confidence"],
    "additionalProperties": False,
}
_SYSTEM = "You are a concise, helpful assistant."

#: Request kinds and their share of the traffic.
KINDS: dict[str, float] = {
    "explain": 0.30,
    "code": 0.25,
    "json_schema": 0.15,
    "json_object": 0.10,
    "json_prompt": 0.10,
    "chat": 0.10,
}
# Answer lengths a chat service sees per kind (capped by the caller's max_tokens).
_MAX_TOKENS = {
    "explain": 160,
    "code": 192,
    "json_schema": 48,
    "json_object": 64,
    "json_prompt": 64,
    "chat": 96,
}


@dataclass(frozen=True)
class ChatRequest:
    """One ``/v1/chat/completions`` body and what it is."""

    kind: str
    body: dict[str, Any]

    @property
    def wants_json(self) -> bool:
        """True when the answer is meant to be JSON."""
        return self.kind.startswith("json")

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The schema the answer must match, if any."""
        fmt = self.body.get("response_format") or {}
        return (fmt.get("json_schema") or {}).get("schema")


def _messages(rng: random.Random, kind: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    if kind == "explain":
        text = f"Explain {rng.choice(_TOPICS)} in {rng.randint(2, 5)} sentences."
        return [{"role": "user", "content": text}], {}
    if kind == "code":
        text = f"Write a {rng.choice(_LANGUAGES)} function that {rng.choice(_CODE_TASKS)}."
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": text}], {}
    if kind == "json_schema":
        text = f"Classify the sentiment of this review: {rng.choice(_REVIEWS)!r}"
        fmt = {
            "type": "json_schema",
            "json_schema": {"name": "sentiment", "schema": _SENTIMENT_SCHEMA},
        }
        return [{"role": "user", "content": text}], {"response_format": fmt}
    name, city, age = rng.choice(_PEOPLE)
    sentence = f"{name}, {age}, moved to {city} last spring."
    if kind == "json_object":
        text = f"Extract the name, city and age from this sentence as a JSON object: {sentence}"
        return [{"role": "user", "content": text}], {"response_format": {"type": "json_object"}}
    if kind == "json_prompt":
        text = f"Extract the name, city and age from: {sentence} Answer only in JSON."
        return [{"role": "user", "content": text}], {}
    if kind == "chat":
        topic = rng.choice(_TOPICS)
        return [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"Explain {topic} in one sentence."},
            {
                "role": "assistant",
                "content": f"In short: {topic} comes down to a few simple ideas.",
            },
            {"role": "user", "content": "Give me a concrete example."},
        ], {}
    raise ValueError(f"unknown request kind {kind!r}; known: {', '.join(KINDS)}")


def sample_request(
    rng: random.Random,
    *,
    kind: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float = 0.7,
    stream: bool = False,
) -> ChatRequest:
    """Draw one chat request from the mix.

    Parameters
    ----------
    rng
        The source of randomness (seeded by the caller).
    kind
        One of :data:`KINDS`; None draws it with the mix's shares.
    model
        ``model`` field of the body (omitted when None: the server's only model).
    max_tokens
        Upper bound on each kind's answer length.
    temperature
        Sampling temperature of every request.
    stream
        Ask for SSE streaming, with token usage in the last event.

    Examples
    --------
    >>> request = sample_request(random.Random(1), max_tokens=32)
    >>> request.kind in KINDS and request.body["max_tokens"] <= 32
    True
    """
    if kind is None:
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    messages, extra = _messages(rng, kind)
    limit = _MAX_TOKENS[kind] if max_tokens is None else min(max_tokens, _MAX_TOKENS[kind])
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": limit,
        "temperature": temperature,
        "seed": rng.randrange(2**31),
        **extra,
    }
    if model is not None:
        body["model"] = model
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return ChatRequest(kind=kind, body=body)


def daily_rate_factor(hour: float) -> float:
    """Share of the peak request rate at ``hour`` (0-24) of a day: 0.2 at 04:00, 1 at 16:00.

    >>> round(daily_rate_factor(4), 3), round(daily_rate_factor(16), 3)
    (0.2, 1.0)
    """
    return 0.2 + 0.8 * (0.5 - 0.5 * math.cos(2 * math.pi * (hour - 4.0) / 24.0))


def arrival_times(
    rng: random.Random,
    *,
    rate: float,
    day_length_s: float | None = None,
    start_hour: float = 0.0,
) -> Iterator[float]:
    """Send times (seconds from the start) of a Poisson process, endless.

    Parameters
    ----------
    rate
        Requests per second (constant shape), or the peak rate of the daily curve.
    day_length_s
        When set, the rate follows :func:`daily_rate_factor` over a day compressed into this
        many seconds (non-homogeneous process, drawn by thinning).
    start_hour
        Hour of the compressed day at which the run starts.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if day_length_s is None:
            yield t
            continue
        hour = (start_hour + 24.0 * t / day_length_s) % 24.0
        if rng.random() < daily_rate_factor(hour):
            yield t
