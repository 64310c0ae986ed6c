"""Deterministic text for the synthetic engine: a word-piece tokenizer, prose and JSON answers.

Nothing here sleeps or keeps state; :mod:`serving.engines.synthetic` adds the timing.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "answer_text",
    "count_tokens",
    "render_chat",
    "request_rng",
    "sample_schema",
    "split_tokens",
]

# A piece is optional leading whitespace plus up to five word characters or one punctuation
# mark; trailing whitespace is a piece of its own. Pieces concatenate back to the exact text and
# average about four characters, close to a BPE tokenizer on English.
_PIECE = re.compile(r"\s*(?:\w{1,5}|[^\w\s])|\s+")

_WORD_TEXT = (
    "the model request latency token cache memory batch queue server client answer prompt "
    "system value field record window signal metric error budget result stream schedule "
    "shard replica node cluster region service endpoint payload context length limit rate "
    "sample vector matrix layer weight gradient output input format schema object array "
    "string number boolean check retry backoff timeout deadline alert incident report "
    "summary detail reason cause effect change update config deploy version build release "
    "is are was were be has have can will should may might must does did uses runs keeps "
    "moves reads writes sends gets finds makes takes gives shows tells returns holds "
    "quickly slowly often rarely always never usually mostly partly fully nearly simply "
    "large small fast slow high low new old stable noisy steady sudden gradual daily"
)
_WORDS = tuple(_WORD_TEXT.split())
_CONNECTIVES = ("and", "but", "so", "while", "because", "when", "then", "which", "as", "if")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word pieces that concatenate back to it.

    >>> split_tokens("Hello, wonderful world")
    ['Hello', ',', ' wonde', 'rful', ' world']
    """
    return _PIECE.findall(text)


def count_tokens(text: str) -> int:
    """Number of word pieces in ``text`` (see :func:`split_tokens`).

    >>> count_tokens("Hello, wonderful world")
    5
    """
    return len(_PIECE.findall(text))


def render_chat(messages: Sequence[dict[str, Any]]) -> str:
    """The prompt a chat request becomes: one ``<|role|>`` block per message, then the answer tag.

    >>> render_chat([{"role": "user", "content": "Hi"}])
    '<|user|>\\nHi\\n<|assistant|>\\n'
    """
    parts = [f"<|{m.get('role', 'user')}|>\n{m.get('content') or ''}\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"


def request_rng(seed: int, *parts: object) -> random.Random:
    """A random generator seeded from ``seed`` and the request's content (stable across runs).

    Python's ``hash`` is salted per process, so the key is hashed with BLAKE2 instead.
    """
    key = json.dumps([seed, *parts], sort_keys=True, default=str).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
    if rng.random() < 0.4:
        words.insert(rng.randint(2, len(words) - 1), rng.choice(_CONNECTIVES))
    if rng.random() < 0.3:
        words.insert(rng.randint(1, len(words) - 1), f"{rng.randint(2, 999)},")
    return " ".join(words).capitalize() + rng.choice(".....?!")


def _prose(rng: random.Random, target_tokens: int, *, loop_tokens: int | None) -> str:
    sentences: list[str] = []
    tokens = 0
    while tokens < target_tokens:
        sentence = _sentence(rng)
        sentences.append(sentence)
        tokens += count_tokens(sentence) + 1
        if loop_tokens is not None and len(sentences) >= 2:
            # A degenerate generation: one sentence over and over, past the token limit.
            repeat = f" {sentence}"
            times = loop_tokens // max(1, count_tokens(repeat)) + 1
            return " ".join(sentences) + repeat * times
    return " ".join(sentences)


def _random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if roll < 0.35:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    if roll < 0.55:
        return rng.randint(0, 1000)
    if roll < 0.7:
        return round(rng.uniform(0, 100), 2)
    if roll < 0.8:
        return rng.random() < 0.5
    if roll < 0.9 and depth < 2:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(1, 4))]
    if depth < 2:
        return {rng.choice(_WORDS): _random_value(rng, depth + 1) for _ in range(rng.randint(1, 3))}
    return None


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _sample_string(schema: dict[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
    elif fmt == "date":
        text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif fmt == "email":
        text = f"{rng.choice(_WORDS)}@example.com"
    else:
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 5)))
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    text = text.ljust(low, "x")
    return text[:high] if isinstance(high, int) else text


def _sample_number(schema: dict[str, Any], rng: random.Random, *, integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
    high = schema.get("maximum", schema.get("exclusiveMaximum", max(low, 0) + 100))
    if integer:
        low = math.floor(low) + 1 if "exclusiveMinimum" in schema else math.ceil(low)
        high = math.ceil(high) - 1 if "exclusiveMaximum" in schema else math.floor(high)
        return rng.randint(low, max(low, high))
    value = round(rng.uniform(low, high), 2)
    return min(max(value, low), high)


def sample_schema(
    schema: dict[str, Any], rng: random.Random, root: dict[str, Any] | None = None, depth: int = 0
) -> Any:
    """A value that matches the simple JSON ``schema`` (types, required, enum, const, ranges).

    Supports ``type`` (also as a list), ``properties``/``required``, ``items`` with
    ``minItems``/``maxItems``, ``enum``, ``const``, ``anyOf``/``oneOf``, local ``$ref``, numeric
    ranges and string lengths and formats; ``pattern`` and ``multipleOf`` are not honoured.

    >>> schema = {"type": "object", "required": ["n"], "properties": {"n": {"enum": [1, 2]}}}
    >>> sample_schema(schema, random.Random(0))["n"] in (1, 2)
    True
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return sample_schema(rng.choice(schema[key]), rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice([k for k in kind if k != "null"] or ["null"])
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        value = {
            name: sample_schema(sub, rng, root, depth + 1)
            for name, sub in props.items()
            if name in required or (depth < 4 and rng.random() < 0.5)
        }
        if not props and schema.get("additionalProperties", True) is not False and depth < 3:
            value = {rng.choice(_WORDS): _random_value(rng, 2) for _ in range(rng.randint(1, 3))}
        return value
    if kind == "array":
        low = schema.get("minItems", 1 if depth < 4 else 0)
        high = schema.get("maxItems", low + 3)
        items = schema.get("items", {})
        return [
            sample_schema(items, rng, root, depth + 1)
            for _ in range(rng.randint(low, max(low, high)))
        ]
    if kind == "string":
        return _sample_string(schema, rng)
    if kind in ("integer", "number"):
        return _sample_number(schema, rng, integer=kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def answer_text(
    rng: random.Random,
    *,
    json_object: bool,
    json_schema: dict[str, Any] | None,
    target_tokens: int,
    loop_tokens: int | None = None,
) -> str:
    """The full answer to a request: JSON when asked, otherwise prose of about ``target_tokens``.

    ``loop_tokens`` makes the prose degenerate into one sentence repeated beyond that many
    tokens (for loop detection).
    """
    if json_schema is not None:
        return json.dumps(sample_schema(json_schema, rng))
    if json_object:
        keys = rng.sample(_WORDS, rng.randint(2, 5))
        return json.dumps({key: _random_value(rng, 0) for key in keys})
    return _prose(rng, target_tokens, loop_tokens=loop_tokens)
