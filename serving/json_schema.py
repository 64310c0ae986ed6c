"""Client JSON schemas (``response_format.json_schema``): checked once, compiled without network.

:func:`compile_schema` refuses (:class:`SchemaRefused`, an HTTP 400 with the reason) a schema

- nested deeper than :data:`MAX_DEPTH` objects and arrays: jsonschema checks and validates
  recursively, and a deeper schema would exhaust Python's stack (a 500) instead of being refused;
- whose ``$schema`` names a dialect jsonschema does not know;
- that is not a valid schema of its dialect (the metaschema check);
- with a ``$ref`` (or ``$dynamicRef``, ``$recursiveRef``) anywhere that does not start with ``#``:
  jsonschema's default registry *downloads* such references while validating, which would let any
  client make the server fetch URLs of its choosing;
- with a local reference that does not resolve within the schema (it would fail mid-validation).

The validator is built on an empty :class:`referencing.Registry` (no retrieval), so nothing is
ever fetched, whatever slips past these checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, UnknownDialect, specification_with

__all__ = ["MAX_DEPTH", "SchemaRefused", "compile_schema"]

# Objects and arrays, counted from the schema's root. jsonschema hit Python's recursion limit
# from about 150 levels here; real response schemas stay far below (OpenAI allows 10 levels).
MAX_DEPTH = 64

_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Values of these keywords are instances, not schemas: a "$ref" key inside them is plain data.
# (A property of that name is taken for one too; _check_local_refs, which walks the schemas as
# the dialect defines them, still refuses a reference of its that leads outside.)
_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})


class SchemaRefused(ValueError):
    """The schema cannot be used; the message says why (for the client)."""


def _nodes(schema: Any) -> Iterator[tuple[Any, int, bool]]:
    """Every object and array of the document: its depth (1 for the root), whether it is data."""
    stack = [(schema, 1, False)]
    while stack:
        node, depth, data = stack.pop()
        yield node, depth, data
        items = node.items() if isinstance(node, dict) else ((None, v) for v in node)
        stack.extend(
            (child, depth + 1, data or key in _DATA_KEYWORDS)
            for key, child in items
            if isinstance(child, dict | list)
        )


def _check_shape(schema: dict[str, Any]) -> None:
    # Data counts towards the depth too: parsing, hashing and comparing it recurse alike.
    for node, depth, data in _nodes(schema):
        if depth > MAX_DEPTH:
            raise SchemaRefused(f"the schema nests deeper than {MAX_DEPTH} objects and arrays")
        if data or not isinstance(node, dict):
            continue
        for keyword in _REF_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str) and not ref.startswith("#"):
                raise SchemaRefused(
                    f"{keyword} {ref!r} points outside the schema: only local references "
                    "(starting with '#') are accepted, nothing is fetched"
                )


def _check_local_refs(resource: Resource[Any], resolver: Any) -> None:
    # Walks the subschemas as the dialect defines them, entering each embedded resource ($id)
    # so that a reference resolves against the same base URI as during validation.
    resolver = resolver.in_subresource(resource)
    contents = resource.contents
    if isinstance(contents, dict):
        for keyword in _REF_KEYWORDS:
            ref = contents.get(keyword)
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except Unresolvable:
                    raise SchemaRefused(
                        f"{keyword} {ref!r} does not resolve within the schema"
                    ) from None
    for sub in resource.subresources():
        _check_local_refs(sub, resolver)


def compile_schema(schema: dict[str, Any]) -> Validator:
    """A validator for a client's ``schema``; raises :class:`SchemaRefused` (see module doc).

    >>> compile_schema({"type": "integer"}).is_valid(3)
    True
    >>> compile_schema({"$ref": "https://example.com/s.json"})
    Traceback (most recent call last):
    ...
    serving.json_schema.SchemaRefused: $ref 'https://example.com/s.json' points outside the \
schema: only local references (starting with '#') are accepted, nothing is fetched
    """
    _check_shape(schema)
    specification = DRAFT202012  # what jsonschema assumes without $schema
    if "$schema" in schema:
        dialect = schema["$schema"]
        if not isinstance(dialect, str):
            raise SchemaRefused(f"$schema must be a dialect URI, got {dialect!r}")
        try:
            specification = specification_with(dialect)
        except UnknownDialect:
            raise SchemaRefused(f"$schema {dialect!r} is not a JSON Schema dialect") from None
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise SchemaRefused(f"invalid JSON schema at {where}: {exc.message}") from None
    resource = specification.create_resource(schema)
    _check_local_refs(resource, Registry().resolver_with_root(resource))
    return cls(schema, registry=Registry())
