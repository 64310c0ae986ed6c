"""Quality checks: JSON extraction and validation, loop detection, JSON requests, finish labels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.config import DEFAULT_JSON_PROMPT_PATTERN
from serving.engines.base import GenerationRequest
from serving.json_schema import SchemaRefused
from serving.quality import JsonCheck, QualityChecker, detect_loop, extract_json, json_error

SCHEMA = {
    "type": "object",
    "required": ["answer", "confidence"],
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ('\n  {"a": 1}  \n', '{"a": 1}'),
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ("```\n[1, 2]\n```\n", "[1, 2]"),
        ('Sure: ```json\n{"a": 1}\n```', 'Sure: ```json\n{"a": 1}\n```'),
    ],
)
def test_extract_json(text: str, expected: str) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    ("text", "object_", "problem"),
    [
        ('{"a": 1}', True, None),
        ("[1, 2]", False, None),
        ("[1, 2]", True, "expected a JSON object"),
        ('{"a": 1', False, "not JSON"),
        ('Here you go: {"a": 1}', False, "not JSON"),
        ("", False, "not JSON"),
        ('```json\n{"a": [1, 2]}\n```', True, None),
    ],
)
def test_json_error(text: str, object_: bool, problem: str | None) -> None:
    found = json_error(text, require_object=object_)
    assert found is None if problem is None else problem in found


def test_schema_violations_are_named() -> None:
    validator = QualityChecker().validator(SCHEMA)
    assert json_error('{"answer": "yes", "confidence": 0.5}', validator=validator) is None
    missing = json_error('{"answer": "yes"}', validator=validator)
    assert "'confidence' is a required property" in missing
    out_of_range = json_error('{"answer": "yes", "confidence": 3}', validator=validator)
    assert "at confidence" in out_of_range


def test_invalid_schema_is_refused() -> None:
    with pytest.raises(SchemaRefused, match="no-such-type"):
        QualityChecker().validator({"type": "no-such-type"})


@pytest.mark.parametrize(
    "text",
    [
        "ok " * 40,  # one word, period 1
        "the cache is warm and " * 10,  # period 5
        "Intro words here. " + "Step one: check the queue, then check the cache again. " * 6,
        "x y " * 3 + "a b c d e f g h i j k l m n o p " * 5,  # period 16
    ],
)
def test_loops_are_detected(text: str) -> None:
    assert detect_loop(text)


@pytest.mark.parametrize(
    "text",
    [
        "ok " * 20,  # too short a span (fewer than 30 words)
        "the cache is warm and " * 4,  # too few repeats
        " ".join(f"word{i}" for i in range(500)),
        "A normal answer that explains how the scheduler admits requests when the queue is full "
        "and why the time to first token grows with the number of waiting requests in it.",
    ],
)
def test_non_loops_are_not_flagged(text: str) -> None:
    assert not detect_loop(text)


def test_loop_parameters() -> None:
    text = "alpha beta gamma " * 4
    assert not detect_loop(text)
    assert detect_loop(text, min_repeats=3, min_words=9)
    assert not detect_loop("a b c d e f " * 10, max_ngram=5)


def _chat(content: str, system: str | None = None) -> GenerationRequest:
    messages = [{"role": "system", "content": system}] if system else []
    return GenerationRequest(
        request_id="c", messages=[*messages, {"role": "user", "content": content}]
    )


def test_json_requests_by_format_and_by_convention() -> None:
    checker = QualityChecker(json_prompt_pattern=DEFAULT_JSON_PROMPT_PATTERN)
    assert checker.asks_for_json(GenerationRequest(request_id="a", prompt="x", json_object=True))
    assert checker.asks_for_json(GenerationRequest(request_id="a", prompt="x", json_schema=SCHEMA))
    assert checker.asks_for_json(
        GenerationRequest(request_id="a", prompt="List three colours. Respond in JSON.")
    )
    assert checker.asks_for_json(_chat("List three colours. Reply only with valid JSON."))
    assert checker.asks_for_json(_chat("List three colours.", system="Always answer in JSON."))
    assert not checker.asks_for_json(_chat("What is JSON?"))
    assert not checker.asks_for_json(
        GenerationRequest(request_id="a", prompt="Explain JSON parsing")
    )
    without = QualityChecker(json_prompt_pattern="")
    assert not without.asks_for_json(GenerationRequest(request_id="a", prompt="Respond in JSON."))


def test_evaluate_statuses_and_finish_labels() -> None:
    checker = QualityChecker(json_prompt_pattern=DEFAULT_JSON_PROMPT_PATTERN)
    schema_request = GenerationRequest(request_id="s", prompt="x", json_schema=SCHEMA)
    good = checker.evaluate(schema_request, '{"answer": "a", "confidence": 1}', "stop")
    assert good.asked_json and good.json_ok and good.finish == "stop"
    truncated = checker.evaluate(schema_request, '{"answer": "a", "conf', "length")
    assert not truncated.json_ok and truncated.finish == "length"
    plain = GenerationRequest(request_id="p", prompt="tell me a story")
    story = checker.evaluate(plain, "Once upon a time.", "stop")
    assert not story.asked_json and story.json_ok and story.finish == "stop"
    looped = checker.evaluate(plain, "and again " * 40, "length")
    assert looped.finish == "loop" and looped.json_ok


def test_the_json_check_decided_at_admission_is_used() -> None:
    checker = QualityChecker(json_prompt_pattern=DEFAULT_JSON_PROMPT_PATTERN)
    request = GenerationRequest(request_id="s", prompt="x", json_schema=SCHEMA)
    check = checker.json_check(request)
    assert check.asked and check.validator is checker.validator(SCHEMA)
    assert not checker.evaluate(request, '{"answer": "a"}', "stop", check).json_ok
    not_asked = JsonCheck(asked=False)  # what admission decided wins
    assert checker.evaluate(request, "plain words", "stop", not_asked).json_ok


def test_output_nested_too_deeply_is_a_verdict_not_a_crash() -> None:
    recursive = QualityChecker().validator({"type": "array", "items": {"$ref": "#"}})
    deep = "[" * 400 + "]" * 400  # parses, but validating recurses past Python's limit
    assert json_error(deep, validator=recursive) == (
        "does not match the schema: nested too deeply to check"
    )
    assert json_error("[" * 100_000 + "]" * 100_000) == "not JSON: nested too deeply to parse"


def _reference_loop(words: list[str], max_ngram: int, min_repeats: int, min_words: int) -> bool:
    # Brute force: some p-gram (p <= max_ngram) repeated back to back min_repeats times or more,
    # the repeated span covering at least min_words words.
    n = len(words)
    for p in range(1, max_ngram + 1):
        for start in range(n):
            copies = 1
            while start + (copies + 1) * p <= n and (
                words[start + copies * p : start + (copies + 1) * p] == words[start : start + p]
            ):
                copies += 1
            # A partial last copy also extends the span (the run may end mid-copy).
            span = copies * p
            while start + span < n and words[start + span] == words[start + span - p]:
                span += 1
            if copies >= min_repeats and span >= min_words:
                return True
    return False


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=0, max_size=40),
    st.integers(1, 6),
    st.integers(2, 5),
    st.integers(2, 24),
)
@settings(max_examples=300, deadline=None)
def test_detect_loop_matches_a_brute_force_reference(
    words: list[str], max_ngram: int, min_repeats: int, min_words: int
) -> None:
    expected = _reference_loop(words, max_ngram, min_repeats, min_words)
    found = detect_loop(
        " ".join(words), max_ngram=max_ngram, min_repeats=min_repeats, min_words=min_words
    )
    assert found == expected
