"""JSON answers of the synthetic engine, produced lazily and never read past ``max_tokens``.

:func:`schema_json` yields the JSON text of a value matching a schema fragment by fragment, and
:func:`json_answer` stops reading once the text holds more than the token budget, so a schema
asking for ``"minItems": 2000000`` or ``"minLength": 1000000000`` costs what the answer shows, not
what the schema asks for. Like a real engine cut by ``max_tokens``, the answer is then truncated
JSON (finish reason ``length``).

Schema support: ``type`` (also as a list), ``properties``/``required``, ``items`` (also
positional, and ``prefixItems``) with ``minItems``/``maxItems``, ``enum``, ``const``,
``anyOf``/``oneOf``, local ``$ref`` (JSON pointers), numeric ranges, string lengths and formats;
``pattern`` and ``multipleOf`` are not honoured. A value nested deeper than :data:`MAX_DEPTH` (a
schema that refers to itself) is ``null``, so that every answer ends.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from serving.engines.synthetic_text import WORDS, count_tokens

__all__ = ["MAX_DEPTH", "json_answer", "schema_json"]

MAX_DEPTH = 32
_MAX_REF_HOPS = 16  # a $ref to a $ref to ...: cycles end as an unconstrained value
_PAD_CHUNK = 256  # characters per fragment of a long minLength padding
_BIGGEST = 2**1000  # larger integer bounds are ignored: floats cannot hold them


def _number(value: Any) -> int | float | None:
    """``value`` when it is a usable finite number (not a boolean), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < _BIGGEST else None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _count(value: Any, default: int) -> int:
    number = _number(value)
    return default if number is None else max(0, int(number))


def _pointer(root: Any, ref: str) -> Any:
    node = root
    for raw in ref[2:].split("/") if ref != "#" else ():
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(part, {})
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return {}
    return node


def _resolve(schema: Any, root: Any) -> Any:
    for _ in range(_MAX_REF_HOPS):
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            return schema
        schema = _pointer(root, ref)
    return {}


def _random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if roll < 0.35:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    if roll < 0.55:
        return rng.randint(0, 1000)
    if roll < 0.7:
        return round(rng.uniform(0, 100), 2)
    if roll < 0.8:
        return rng.random() < 0.5
    if roll < 0.9 and depth < 2:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(1, 4))]
    if depth < 2:
        return {rng.choice(WORDS): _random_value(rng, depth + 1) for _ in range(rng.randint(1, 3))}
    return None


def _string(schema: dict[str, Any], rng: random.Random) -> Iterator[str]:
    fmt = schema.get("format")
    if fmt == "date-time":
        text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
    elif fmt == "date":
        text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif fmt == "email":
        text = f"{rng.choice(WORDS)}@example.com"
    else:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
    size = max(len(text), _count(schema.get("minLength"), 0))
    high = _number(schema.get("maxLength"))
    if high is not None:
        size = min(size, max(0, int(high)))
    text = text[:size]
    yield json.dumps(text)[:-1]  # the opening quote and the text, not the closing quote
    for start in range(len(text), size, _PAD_CHUNK):
        yield "x" * min(_PAD_CHUNK, size - start)
    yield '"'


def _number_value(schema: dict[str, Any], rng: random.Random, *, integer: bool) -> int | float:
    def bound(inclusive: str, exclusive: str, default: int | float) -> int | float:
        for key in (inclusive, exclusive):
            value = _number(schema.get(key))
            if value is not None:
                return value
        return default

    low = bound("minimum", "exclusiveMinimum", 0)
    high = bound("maximum", "exclusiveMaximum", max(low, 0) + 100)
    if integer:
        low = math.floor(low) + 1 if "exclusiveMinimum" in schema else math.ceil(low)
        high = math.ceil(high) - 1 if "exclusiveMaximum" in schema else math.floor(high)
        return rng.randint(low, max(low, high))
    value = round(rng.uniform(low, high), 2)
    return min(max(value, low), high)


def _object(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Iterator[str]:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    if not props and schema.get("additionalProperties", True) is not False and depth < 3:
        count = rng.randint(1, 3)
        yield json.dumps({rng.choice(WORDS): _random_value(rng, 2) for _ in range(count)})
        return
    required = schema.get("required")
    required = {r for r in required if isinstance(r, str)} if isinstance(required, list) else ()
    yield "{"
    first = True
    for name, sub in props.items():
        if name in required or (depth < 4 and rng.random() < 0.5):
            yield ("" if first else ", ") + json.dumps(name) + ": "
            first = False
            yield from schema_json(sub, rng, root, depth + 1)
    yield "}"


def _array(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> Iterator[str]:
    low = _count(schema.get("minItems"), 1 if depth < 4 else 0)
    high = _count(schema.get("maxItems"), low + 3)
    items = schema.get("items", {})
    prefix = schema.get("prefixItems", items if isinstance(items, list) else [])
    prefix = prefix if isinstance(prefix, list) else []
    rest = schema.get("additionalItems", {}) if isinstance(items, list) else items
    yield "["
    for i in range(rng.randint(low, max(low, high))):
        if i:
            yield ", "
        yield from schema_json(prefix[i] if i < len(prefix) else rest, rng, root, depth + 1)
    yield "]"


def schema_json(schema: Any, rng: random.Random, root: Any = None, depth: int = 0) -> Iterator[str]:
    """The JSON text of a value matching ``schema``, lazily, in fragments (see the module doc).

    >>> schema = {"type": "object", "required": ["n"], "properties": {"n": {"enum": [1, 2]}}}
    >>> json.loads("".join(schema_json(schema, random.Random(0))))["n"] in (1, 2)
    True
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if depth > MAX_DEPTH or schema is False:
        yield "null"
        return
    if not isinstance(schema, dict):  # true: anything goes
        schema = {}
    if "const" in schema:
        yield json.dumps(schema["const"])
        return
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        yield json.dumps(rng.choice(enum))
        return
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            yield from schema_json(rng.choice(options), rng, root, depth + 1)
            return
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice([k for k in kind if k != "null"] or ["null"])
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        yield from _object(schema, rng, root, depth)
    elif kind == "array":
        yield from _array(schema, rng, root, depth)
    elif kind == "string":
        yield from _string(schema, rng)
    elif kind in ("integer", "number"):
        yield json.dumps(_number_value(schema, rng, integer=kind == "integer"))
    elif kind == "boolean":
        yield json.dumps(rng.random() < 0.5)
    else:
        yield "null"


def _take(fragments: Iterable[str], tokens: int) -> str:
    """The fragments joined, read only until the text holds more than ``tokens`` word pieces."""
    parts: list[str] = []
    size, check_at = 0, tokens + 1  # a piece is at least one character long
    for fragment in fragments:
        parts.append(fragment)
        size += len(fragment)
        if size >= check_at:
            text = "".join(parts)
            if count_tokens(text) > tokens:
                return text
            # Counting again at every fragment would be quadratic; doubling keeps it linear.
            parts, check_at = [text], 2 * size
    return "".join(parts)


def json_answer(rng: random.Random, *, schema: dict[str, Any] | None, max_tokens: int) -> str:
    """A JSON answer: a value matching ``schema``, or without one an object of random fields.

    Only the first ``max_tokens`` word pieces are final: the text may stop right after them,
    mid-value (the answer is cut there anyway).

    >>> big = {"type": "array", "minItems": 2_000_000, "items": {"type": "integer"}}
    >>> len(json_answer(random.Random(0), schema=big, max_tokens=8)) < 100
    True
    """
    if schema is None:
        keys = rng.sample(WORDS, rng.randint(2, 5))
        return json.dumps({key: _random_value(rng, 0) for key in keys})
    return _take(schema_json(schema, rng), max_tokens)
