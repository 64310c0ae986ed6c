"""Output quality checks: JSON validity (and schema conformance), loops and truncation.

Decisions:

- **JSON extraction.** The answer must be JSON as a whole, surrounding whitespace allowed. One
  Markdown fence around the whole answer (```` ```json ... ``` ````) is tolerated, because a client
  strips it reliably; JSON embedded in prose is a failure (the client would have to guess).
- **Which requests count as JSON requests.** ``response_format`` ``json_object`` (the answer must
  be a JSON object) or ``json_schema`` (the answer must validate against the schema), or a prompt
  that matches the configurable convention pattern (any JSON value).
- **Loops.** An n-gram of at most ``max_ngram`` words repeated back to back at least
  ``min_repeats`` times, the repeated span covering at least ``min_words`` words.
- **Finish reason.** Exactly one per completed generation: ``loop`` when a loop is found (it
  usually also ran into the length limit, but the loop is the more specific story), else the
  engine's ``stop`` or ``length`` (truncation).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema.protocols import Validator
from numpy.lib.stride_tricks import as_strided

from serving.engines.base import GenerationRequest
from serving.json_schema import compile_schema

__all__ = [
    "JsonCheck",
    "QualityChecker",
    "QualityResult",
    "detect_loop",
    "extract_json",
    "json_error",
]

FinishLabel = Literal["stop", "length", "loop"]

# Values no word hash takes in practice, distinct from each other.
_SENTINELS = np.arange(-1, -1 - 4096, -1, dtype=np.int64) * 7919 + 1
_FENCE = re.compile(r"\A```[A-Za-z]*[ \t]*\n(.*)\n```\Z", re.DOTALL)
_SCHEMA_CACHE_SIZE = 64


def extract_json(text: str) -> str:
    """The text that must parse as JSON: ``text`` stripped, without one enclosing code fence.

    >>> extract_json('  ```json\\n{"a": 1}\\n```\\n')
    '{"a": 1}'
    >>> extract_json('Here it is: {"a": 1}')
    'Here it is: {"a": 1}'
    """
    stripped = text.strip()
    match = _FENCE.match(stripped)
    return match.group(1).strip() if match else stripped


def json_error(
    text: str, *, require_object: bool = False, validator: Validator | None = None
) -> str | None:
    """Why ``text`` is not acceptable JSON, or None when it is.

    >>> json_error('{"a": 1}', require_object=True) is None
    True
    >>> json_error('[1, 2]', require_object=True)
    'expected a JSON object, got list'
    >>> json_error('{"a": 1')
    "not JSON: Expecting ',' delimiter at position 7"
    >>> json_error("[" * 100_000 + "]" * 100_000)
    'not JSON: nested too deeply to parse'
    """
    # Parsing and validating recurse per nesting level, and a model's output can nest thousands
    # deep: a verdict, not a crash of the request.
    try:
        value: Any = json.loads(extract_json(text))
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at position {exc.pos}"
    except RecursionError:
        return "not JSON: nested too deeply to parse"
    if require_object and not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    if validator is not None:
        try:
            error = jsonschema_exceptions.best_match(validator.iter_errors(value))
        except RecursionError:
            return "does not match the schema: nested too deeply to check"
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return f"does not match the schema at {where}: {error.message}"
    return None


@functools.lru_cache(maxsize=16)
def _needed(top: int, min_repeats: int, min_words: int) -> np.ndarray:
    # Run length needed per column (period top, top - 1, ..., 1): the repeated span of
    # ``run + period`` words must hold ``min_repeats`` copies and ``min_words`` words.
    periods = np.arange(top, 0, -1)
    return np.maximum((min_repeats - 1) * periods, min_words - periods)


def detect_loop(
    text: str, *, max_ngram: int = 32, min_repeats: int = 5, min_words: int = 30
) -> bool:
    """True when an n-gram of words repeats back to back (see the module docstring).

    >>> detect_loop("we tried again and " * 8)
    True
    >>> detect_loop("a perfectly ordinary sentence that does not repeat itself at all")
    False
    """
    words = text.split()
    n = len(words)
    if n < min_words:
        return False
    # Necessary condition, cheap: ``min_repeats`` back-to-back copies of a p-gram contain the
    # pair of its first two words (or ``w w`` when p = 1) at least ``min_repeats - 1`` times.
    # Ordinary prose rarely repeats a word pair that often, and then the scan below is skipped.
    if max(Counter(itertools.pairwise(words)).values()) < min_repeats - 1:
        return False
    top = min(max_ngram, n - 1)
    # Word ids by hash (a 64-bit collision is too unlikely to matter), after ``top`` sentinels
    # that match nothing, so that row i of the windows ends with word i and holds the ``top``
    # words before it.
    padded = np.empty(n + top, dtype=np.int64)
    padded[:top] = _SENTINELS[:top]
    padded[top:] = np.fromiter(map(hash, words), dtype=np.int64, count=n)
    windows = as_strided(padded, shape=(n, top + 1), strides=(8, 8), writeable=False)
    same = windows[:, :top] == windows[:, top:]  # column k: word i equals word i - (top - k)
    needed = _needed(top, min_repeats, min_words)
    for k in np.flatnonzero(same.sum(axis=0) >= needed):
        # Longest run of True in the column: the longest stretch repeating with this period.
        breaks = np.concatenate(([-1], np.flatnonzero(~same[:, k]), [n]))
        if np.diff(breaks).max() - 1 >= needed[k]:
            return True
    return False


@dataclass(frozen=True)
class QualityResult:
    """The verdict on one completed generation."""

    asked_json: bool
    json_problem: str | None  # None when JSON was not asked or the answer is valid
    finish: FinishLabel

    @property
    def json_ok(self) -> bool:
        """False only for a JSON request that got invalid JSON."""
        return self.json_problem is None


@dataclass(frozen=True)
class JsonCheck:
    """What the JSON check of one request needs, decided once when it is admitted."""

    asked: bool  # the request asked for JSON (response format or prompt convention)
    validator: Validator | None = None  # its schema's, when it has one


class QualityChecker:
    """Applies the checks with the configured JSON prompt convention and loop parameters."""

    def __init__(
        self,
        *,
        json_prompt_pattern: str = "",
        loop_max_ngram: int = 32,
        loop_min_repeats: int = 5,
        loop_min_words: int = 30,
    ) -> None:
        self.json_prompt_pattern = json_prompt_pattern
        self.loop_max_ngram = loop_max_ngram
        self.loop_min_repeats = loop_min_repeats
        self.loop_min_words = loop_min_words
        self._pattern = re.compile(json_prompt_pattern) if json_prompt_pattern else None
        self._validators: dict[str, Validator] = {}
        self._lock = threading.Lock()  # json_check runs in worker threads too

    def validator(self, schema: dict[str, Any]) -> Validator:
        """A cached validator for ``schema``.

        Raises :class:`~serving.json_schema.SchemaRefused` when the schema is invalid or refers
        outside itself. Checking a large schema takes seconds: call it off the event loop when
        the schema may be new.
        """
        key = json.dumps(schema, sort_keys=True)
        found = self._validators.get(key)
        if found is None:
            found = compile_schema(schema)
            with self._lock:
                if len(self._validators) >= _SCHEMA_CACHE_SIZE:
                    self._validators.pop(next(iter(self._validators)))
                self._validators[key] = found
        return found

    def asks_for_json(self, request: GenerationRequest) -> bool:
        """Whether ``request`` asked for JSON (response format or prompt convention)."""
        if request.json_object or request.json_schema is not None:
            return True
        if self._pattern is None:
            return False
        if request.prompt is not None:
            return self._pattern.search(request.prompt) is not None
        # The instruction sits in the system prompt or in the latest user message.
        messages = request.messages or []
        users = [m for m in messages if m.get("role") == "user"]
        candidates = [m for m in messages if m.get("role") in ("system", "developer")] + users[-1:]
        return any(self._pattern.search(str(m.get("content") or "")) for m in candidates)

    def json_check(self, request: GenerationRequest) -> JsonCheck:
        """The JSON check ``request`` needs; raises ``SchemaRefused`` for an unusable schema.

        Searches the prompt and may compile the schema: milliseconds to seconds on large ones.
        """
        schema = request.json_schema
        validator = self.validator(schema) if schema is not None else None
        return JsonCheck(asked=self.asks_for_json(request), validator=validator)

    def evaluate(
        self,
        request: GenerationRequest,
        text: str,
        finish_reason: str | None,
        check: JsonCheck | None = None,
    ) -> QualityResult:
        """Check the full ``text`` of a completed generation of ``request``.

        ``check``: the request's :meth:`json_check`, when the caller has it already.
        """
        check = self.json_check(request) if check is None else check
        problem = None
        if check.asked:
            problem = json_error(
                text, require_object=request.json_object, validator=check.validator
            )
        looped = detect_loop(
            text,
            max_ngram=self.loop_max_ngram,
            min_repeats=self.loop_min_repeats,
            min_words=self.loop_min_words,
        )
        finish: FinishLabel = (
            "loop" if looped else "length" if finish_reason == "length" else "stop"
        )
        return QualityResult(asked_json=check.asked, json_problem=problem, finish=finish)
