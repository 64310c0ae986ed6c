"""Deterministic text for the synthetic engine: a word-piece tokenizer, chat rendering, prose.

Nothing here sleeps or keeps state; :mod:`serving.engines.synthetic` adds the timing and
:mod:`serving.engines.synthetic_json` the JSON answers.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["WORDS", "count_tokens", "prose", "render_chat", "request_rng", "split_tokens"]

# A piece is optional leading whitespace plus up to five word characters or one punctuation
# mark; trailing whitespace is a piece of its own. Pieces concatenate back to the exact text and
# average about four characters, close to a BPE tokenizer on English.
_PIECE = re.compile(r"\s*(?:\w{1,5}|[^\w\s])|\s+")
# Long texts are counted in slices of about this many characters, so that a worker thread counting
# a large prompt hands the GIL (and so the event loop) back between slices: one findall over a
# megabyte holds it for ~40 ms. A piece always ends between a non-space character and a non-word
# one, so slices cut there count exactly what the whole text does.
_SLICE = 1 << 16
_CUT = re.compile(r"\S(?=\W)")

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
WORDS = tuple(_WORD_TEXT.split())
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
    count, start = 0, 0
    while len(text) - start > _SLICE:
        cut = _CUT.search(text, start + _SLICE)
        if cut is None:
            break
        count += len(_PIECE.findall(text, start, cut.end()))
        start = cut.end()
    return count + len(_PIECE.findall(text, start))


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
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
    if rng.random() < 0.4:
        words.insert(rng.randint(2, len(words) - 1), rng.choice(_CONNECTIVES))
    if rng.random() < 0.3:
        words.insert(rng.randint(1, len(words) - 1), f"{rng.randint(2, 999)},")
    return " ".join(words).capitalize() + rng.choice(".....?!")


def prose(rng: random.Random, target_tokens: int, *, loop_tokens: int | None = None) -> str:
    """Sentences of about ``target_tokens`` word pieces.

    ``loop_tokens`` makes the text degenerate into one sentence repeated beyond that many pieces
    (for loop detection).
    """
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
