"""The synthetic engine: deterministic text, JSON that matches schemas, timing model, queueing."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import jsonschema
import pytest

from serving.engines.base import Engine, EngineError, GenerationRequest, PromptTooLong
from serving.engines.synthetic import SyntheticEngine
from serving.engines.synthetic_json import schema_json
from serving.engines.synthetic_text import count_tokens, split_tokens
from serving.quality import detect_loop

pytestmark = pytest.mark.anyio


async def _run(engine: SyntheticEngine, request: GenerationRequest) -> tuple[str, list]:
    chunks = [chunk async for chunk in engine.generate(request)]
    return "".join(c.text for c in chunks), chunks


async def _started(**params: Any) -> SyntheticEngine:
    engine = SyntheticEngine(**{"speed": math.inf, **params})
    await engine.start()
    return engine


def test_implements_the_engine_protocol() -> None:
    assert isinstance(SyntheticEngine(), Engine)


def test_pieces_concatenate_to_the_text() -> None:
    text = "  Hello,  world!\n\tA longer-word: supercalifragilistic 42.\n"
    assert "".join(split_tokens(text)) == text
    assert count_tokens(text) == len(split_tokens(text))


async def test_same_request_same_answer_and_seed_matters() -> None:
    engine = await _started()
    request = GenerationRequest(request_id="a", prompt="Tell me about queues", max_tokens=400)
    first, _ = await _run(engine, request)
    again, _ = await _run(
        engine, GenerationRequest(request_id="b", prompt="Tell me about queues", max_tokens=400)
    )
    other, _ = await _run(await _started(seed=1), request)
    assert first == again
    assert first != other
    assert len(first.split()) > 5


async def test_length_limit_and_token_counts() -> None:
    engine = await _started()
    text, chunks = await _run(engine, GenerationRequest(request_id="r", prompt="hi", max_tokens=7))
    assert [c.output_tokens for c in chunks] == list(range(1, 8))
    assert chunks[-1].finish_reason == "length"
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[0].prompt_tokens == engine.count_prompt_tokens(
        GenerationRequest(request_id="x", prompt="hi")
    )
    assert count_tokens(text) == 7


async def test_natural_end_is_stop_and_stop_sequences_cut() -> None:
    engine = await _started(mean_output_tokens=20)
    request = GenerationRequest(request_id="r", prompt="hi", max_tokens=2000)
    text, chunks = await _run(engine, request)
    assert chunks[-1].finish_reason == "stop"
    word = text.split()[3]
    cut, chunks = await _run(
        engine, GenerationRequest(request_id="s", prompt="hi", max_tokens=2000, stop=(word,))
    )
    assert cut == text[: text.index(word)]
    assert chunks[-1].finish_reason == "stop"


async def test_json_object_answers_parse() -> None:
    engine = await _started()
    for i in range(20):
        request = GenerationRequest(
            request_id=f"j{i}", prompt=f"item {i}", max_tokens=500, json_object=True
        )
        text, _ = await _run(engine, request)
        assert isinstance(json.loads(text), dict)


SCHEMAS = [
    {
        "type": "object",
        "required": ["name", "age", "tier", "tags"],
        "properties": {
            "name": {"type": "string", "minLength": 3, "maxLength": 12},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "tier": {"enum": ["free", "pro", "team"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
            "active": {"type": "boolean"},
            "when": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": False,
    },
    {
        "$defs": {
            "point": {
                "type": "object",
                "required": ["x", "y"],
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            }
        },
        "type": "object",
        "required": ["points", "kind"],
        "properties": {
            "points": {"type": "array", "items": {"$ref": "#/$defs/point"}},
            "kind": {"anyOf": [{"const": "line"}, {"type": "null"}]},
            "label": {"type": ["string", "null"]},
        },
    },
    {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "minItems": 1},
]


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_json_schema_answers_validate(schema: dict) -> None:
    engine = await _started()
    for i in range(10):
        request = GenerationRequest(
            request_id=f"s{i}", prompt=f"p{i}", max_tokens=1000, json_schema=schema
        )
        text, _ = await _run(engine, request)
        jsonschema.validate(json.loads(text), schema)


def test_schema_json_is_deterministic() -> None:
    import random

    first = "".join(schema_json(SCHEMAS[0], random.Random(3)))
    assert first == "".join(schema_json(SCHEMAS[0], random.Random(3)))
    jsonschema.validate(json.loads(first), SCHEMAS[0])


async def test_json_cut_by_length_is_invalid() -> None:
    engine = await _started()
    request = GenerationRequest(request_id="t", prompt="p", max_tokens=3, json_schema=SCHEMAS[0])
    text, chunks = await _run(engine, request)
    assert chunks[-1].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


async def test_loop_share_produces_detectable_loops() -> None:
    looping = await _started(loop_share=1.0)
    normal = await _started(loop_share=0.0)
    request = GenerationRequest(request_id="l", prompt="explain", max_tokens=600)
    text, chunks = await _run(looping, request)
    assert chunks[-1].finish_reason == "length"
    assert detect_loop(text)
    assert not detect_loop((await _run(normal, request))[0])


async def test_prompt_too_long() -> None:
    engine = await _started(max_model_len=64)
    with pytest.raises(PromptTooLong):
        await _run(engine, GenerationRequest(request_id="x", prompt="word " * 60, max_tokens=10))


async def test_not_started_and_closed_engines_refuse() -> None:
    engine = SyntheticEngine(speed=math.inf)
    assert not engine.ready()
    with pytest.raises(EngineError):
        await _run(engine, GenerationRequest(request_id="x", prompt="p"))
    await engine.start()
    assert engine.ready()
    await engine.close()
    await engine.close()  # idempotent
    assert not engine.ready()


async def test_invalid_parameters_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="max_running"):
        await SyntheticEngine(max_running=0).start()
    with pytest.raises(ValueError, match="loop_share"):
        await SyntheticEngine(loop_share=2.0).start()


def test_timing_model_grows_with_prompt_and_batch() -> None:
    engine = SyntheticEngine()
    assert engine.prefill_s(2000) > engine.prefill_s(10) > 0
    assert engine.token_s(16) > engine.token_s(2) > engine.token_s(1) == engine.tpot_s


async def test_time_to_first_token_follows_prompt_length() -> None:
    engine = await _started(speed=20.0)
    loop = asyncio.get_running_loop()
    long_prompt = "alpha beta " * 1500
    request = GenerationRequest(request_id="long", prompt=long_prompt, max_tokens=1)
    start = loop.time()
    await _run(engine, request)
    elapsed = loop.time() - start
    # Sleeps never end early: the modelled prefill is a lower bound of the measured time.
    assert elapsed >= 0.95 * engine.prefill_s(engine.count_prompt_tokens(request)) / engine.speed


async def test_bounded_concurrency_queues_the_rest() -> None:
    engine = await _started(speed=50.0, max_running=2)
    seen: list[tuple[int, int]] = []
    first_token: dict[str, float] = {}
    done: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        request = GenerationRequest(request_id=f"q{i}", prompt="hi", max_tokens=20)
        async for chunk in engine.generate(request):
            first_token.setdefault(request.request_id, loop.time())
            seen.append((engine.running, engine.waiting))
            assert chunk.output_tokens <= 20
        done[request.request_id] = loop.time()

    await asyncio.gather(*(one(i) for i in range(5)))
    assert max(r for r, _ in seen) == 2
    assert max(w for _, w in seen) == 3
    # FIFO: the third request gets its first token only after one of the first two finished.
    assert first_token["q2"] >= min(done["q0"], done["q1"])
    assert engine.running == engine.waiting == 0


async def test_abort_stops_the_generation_and_frees_the_slot() -> None:
    engine = await _started(speed=50.0, max_running=1)
    request = GenerationRequest(request_id="ab", prompt="hi", max_tokens=500)
    received = 0
    with pytest.raises(EngineError, match="aborted"):
        async for _ in engine.generate(request):
            received += 1
            if received == 3:
                await engine.abort("ab")
    assert received == 3
    assert engine.running == 0
    await engine.abort("unknown")  # no-op
    text, _ = await _run(engine, GenerationRequest(request_id="next", prompt="hi", max_tokens=3))
    assert count_tokens(text) == 3


def test_long_texts_are_counted_in_slices_exactly() -> None:
    import random

    rng = random.Random(5)
    alphabet = ["word", " ", "  ", "\n\t", ",", "!", "é", "中文", "x" * 13, " " * 300, "42"]
    for size in (70_000, 300_000):
        text = "".join(rng.choice(alphabet) for _ in range(size))
        assert count_tokens(text) == len(split_tokens(text))
    for text in ("a" * 200_000, " " * 200_000, "," * 200_000, "ab " * 100_000):
        assert count_tokens(text) == len(split_tokens(text))


BOMB = {"type": "array", "minItems": 2_000_000, "items": {"type": "integer"}}


@pytest.mark.parametrize(
    "schema",
    [
        BOMB,
        {"type": "string", "minLength": 2_000_000_000},
        {"type": "object", "required": ["a"], "properties": {"a": {"type": "array", **BOMB}}},
    ],
)
async def test_a_schema_bomb_costs_what_max_tokens_shows(schema: dict) -> None:
    engine = await _started()
    request = GenerationRequest(request_id="b", prompt="p", max_tokens=8, json_schema=schema)
    start = asyncio.get_running_loop().time()
    text, chunks = await _run(engine, request)
    assert asyncio.get_running_loop().time() - start < 0.5
    assert [c.output_tokens for c in chunks] == list(range(1, 9))
    assert chunks[-1].finish_reason == "length"  # truncated JSON, as a real engine gives
    assert text[0] in '["{' and len(text) < 100


async def test_self_referring_and_boolean_schemas_end() -> None:
    engine = await _started()
    schemas = [
        {"type": "object", "required": ["next"], "properties": {"next": {"$ref": "#"}}},
        {"anyOf": [{"$ref": "#"}]},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"type": "array", "items": True, "minItems": 3},
        {"type": "object", "required": ["never"], "properties": {"never": False}},
    ]
    for i, schema in enumerate(schemas):
        request = GenerationRequest(
            request_id=f"r{i}", prompt="p", max_tokens=3000, json_schema=schema
        )
        text, chunks = await _run(engine, request)
        assert chunks[-1].finish_reason == "stop"
        json.loads(text)  # complete JSON, however the schema refers to itself


async def test_positional_items_are_followed() -> None:
    engine = await _started()
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [{"type": "integer"}, {"type": "string", "format": "email"}],
        "minItems": 2,
        "maxItems": 2,
    }
    request = GenerationRequest(request_id="t", prompt="p", max_tokens=500, json_schema=schema)
    text, _ = await _run(engine, request)
    jsonschema.validate(json.loads(text), schema)


async def test_a_stop_sequence_across_the_token_limit_is_found() -> None:
    """The answer is built a little past ``max_tokens``, so a stop sequence that starts before
    the limit and ends after it cuts the answer as it would cut the whole answer."""
    engine = await _started()

    def request(**params: Any) -> GenerationRequest:
        return GenerationRequest(request_id="s", prompt="p", json_schema=SCHEMAS[0], **params)

    whole, _ = await _run(engine, request(max_tokens=1000))
    pieces = split_tokens(whole)
    limit = next(
        k
        for k in range(5, len(pieces) - 3)
        if whole.count("".join(pieces[k - 1 : k + 3])) == 1 and pieces[k - 1].strip()
    )
    stop = "".join(pieces[limit - 1 : limit + 3])  # from the last token within the limit on
    text, chunks = await _run(engine, request(max_tokens=limit, stop=(stop,)))
    assert text == "".join(pieces[: limit - 1])
    assert chunks[-1].finish_reason == "stop"
