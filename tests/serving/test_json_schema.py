"""Client JSON schemas: what is accepted, what is refused and why, and that nothing is fetched."""

from __future__ import annotations

from typing import Any

import pytest

from serving.json_schema import MAX_DEPTH, SchemaRefused, compile_schema

POINT = {"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}}}


def _nested(levels: int) -> dict[str, Any]:
    """A schema of ``levels`` objects and arrays, counted as :data:`MAX_DEPTH` counts them."""
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels - 1):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"point": POINT}, "type": "array", "items": {"$ref": "#/$defs/point"}},
        {"$defs": {"p": {"$anchor": "pt", **POINT}}, "$ref": "#pt"},
        {"type": "object", "properties": {"child": {"$ref": "#"}}},  # recursive
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "definitions": {"point": POINT},
            "items": {"$ref": "#/definitions/point"},
        },
        # An embedded resource: its own "#/..." resolves within it, as when validating.
        {
            "properties": {
                "inner": {
                    "$id": "https://example.com/inner",
                    "$defs": {"n": {"type": "number"}},
                    "items": {"$ref": "#/$defs/n"},
                }
            }
        },
        # "$ref" as data (enum) or as a property name is no reference.
        {"enum": [{"$ref": "https://example.com/a.json"}]},
        {"type": "object", "properties": {"$ref": {"type": "string"}}},
    ],
)
def test_valid_schemas_compile(schema: dict[str, Any]) -> None:
    assert compile_schema(schema) is not None


def test_the_validator_checks_through_local_references() -> None:
    schema = {"$defs": {"point": POINT}, "type": "array", "items": {"$ref": "#/$defs/point"}}
    validator = compile_schema(schema)
    assert validator.is_valid([{"x": 1}])
    assert not validator.is_valid([{"x": "one"}])


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"$ref": "https://example.com/schema.json"}, "points outside the schema"),
        ({"$ref": "other.json#/a"}, "points outside the schema"),
        ({"properties": {"a": {"$ref": "file:///etc/passwd"}}}, "points outside the schema"),
        ({"$dynamicRef": "https://example.com/s#meta"}, "$dynamicRef"),
        ({"x-extension": {"$ref": "http://127.0.0.1:9/x"}}, "points outside the schema"),
        # A property named like a data keyword is a schema all the same.
        ({"properties": {"default": {"$ref": "https://e.com/a"}}}, "does not resolve"),
        ({"$ref": "#/$defs/missing"}, "does not resolve within the schema"),
        ({"$ref": "#nowhere"}, "does not resolve within the schema"),
        ({"type": "no-such-type"}, "invalid JSON schema at type"),
        ({"type": "string", "pattern": "("}, "invalid JSON schema at pattern"),
        ({"$schema": 5}, "$schema must be a dialect URI"),
        ({"$schema": "https://example.com/dialect"}, "is not a JSON Schema dialect"),
    ],
)
def test_unusable_schemas_are_refused_with_the_reason(schema: dict[str, Any], reason: str) -> None:
    with pytest.raises(SchemaRefused) as refused:
        compile_schema(schema)
    assert reason in str(refused.value)


def test_depth_limit() -> None:
    deepest = _nested(MAX_DEPTH)
    validator = compile_schema(deepest)  # deep, and far from Python's recursion limit
    value: Any = 1
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert validator.is_valid(value)
    with pytest.raises(SchemaRefused, match=f"deeper than {MAX_DEPTH}"):
        compile_schema(_nested(MAX_DEPTH + 1))
    # Far deeper than jsonschema could check: refused, not a RecursionError.
    with pytest.raises(SchemaRefused, match="deeper"):
        compile_schema(_nested(5000))
    for hidden in ({"properties": {"enum": _nested(300)}}, {"enum": [_nested(300)]}):
        with pytest.raises(SchemaRefused, match="deeper"):
            compile_schema(hidden)
