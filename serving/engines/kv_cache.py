"""The synthetic engine's scheduler: a sequence limit and a paged KV cache, with preemption.

Modelled on vLLM's v1 scheduler with its defaults (first come first served, preemption by
recomputation):

- the KV cache holds ``capacity_tokens`` tokens in blocks of ``block_size``; a running sequence
  holds the blocks of its prompt and of the tokens it has generated;
- waiting sequences are admitted in arrival order once fewer than ``max_running`` run and the
  free blocks hold the sequence's tokens and its next one; the head of the queue holds back those
  behind it, as in vLLM;
- a running sequence whose next token needs a block when none is free preempts the sequence
  admitted last (itself, when that is the newest): its blocks are freed and it goes back to the
  head of the queue, to recompute its prompt and output so far once admitted again.

The scheduler only keeps the books; :class:`~serving.engines.synthetic.SyntheticEngine` waits
for :attr:`Slot.wake` and models the time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["BLOCK_SIZE", "KvScheduler", "Slot"]

BLOCK_SIZE = 16  # vLLM's default block size on GPUs and CPUs


@dataclass(eq=False)
class Slot:
    """One sequence as the scheduler sees it."""

    tokens: int  # prompt and output tokens whose KV the sequence holds (or needs back)
    blocks: int = 0
    running: bool = False
    admissions: int = 0  # a new admission (after a preemption) recomputes the tokens held
    # Set when the sequence is admitted (or must look at its state: aborted, preempted).
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class KvScheduler:
    """Admission and preemption books of one engine.

    >>> s = KvScheduler(max_running=4, capacity_tokens=64)  # four blocks of 16
    >>> a, b = Slot(tokens=30), Slot(tokens=20)
    >>> s.enqueue(a); s.enqueue(b)
    >>> (a.running, b.running, s.usage())  # 31 tokens: two blocks; 21: two more
    (True, True, 1.0)
    >>> a.tokens = 32; s.grow(a)  # a's 33rd token needs a fifth block: b, the newest, goes
    True
    >>> (b.running, s.waiting, s.preemptions)
    (False, 1, 1)
    """

    def __init__(
        self,
        *,
        max_running: int,
        capacity_tokens: int,
        block_size: int = BLOCK_SIZE,
        on_preempt: Callable[[], None] | None = None,
    ) -> None:
        self.max_running = max_running
        self.block_size = block_size
        # Rounded up, so a cache as large as the context always holds a longest sequence.
        self.total_blocks = -(-capacity_tokens // block_size)
        self.used_blocks = 0
        self.preemptions = 0
        self._running: list[Slot] = []  # in admission order: the last is preempted first
        self._waiting: deque[Slot] = deque()
        self._on_preempt = on_preempt

    @property
    def running(self) -> int:
        """Sequences admitted and not finished or preempted."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Sequences queued for admission, preempted ones included."""
        return len(self._waiting)

    def usage(self) -> float:
        """Share of the KV cache's blocks in use (vLLM's ``kv_cache_usage_perc``)."""
        return self.used_blocks / self.total_blocks if self.total_blocks else 0.0

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def enqueue(self, slot: Slot) -> None:
        """Queue a new sequence behind the others; admit what fits."""
        self._waiting.append(slot)
        self._admit()

    def grow(self, slot: Slot) -> bool:
        """Make room for ``slot``'s next token, preempting the newest sequences if needed.

        Returns False when ``slot`` itself was preempted (it is queued again).
        """
        need = self._blocks(slot.tokens + 1) - slot.blocks
        while need > self.total_blocks - self.used_blocks:
            victim = self._running[-1]
            self._preempt(victim)
            if victim is slot:
                return False
        slot.blocks += max(need, 0)
        self.used_blocks += max(need, 0)
        return True

    def release(self, slot: Slot) -> None:
        """A sequence ended (finished, aborted, cancelled): free what it holds, admit others."""
        if slot.running:
            self._running.remove(slot)
            slot.running = False
        elif slot in self._waiting:
            self._waiting.remove(slot)
        self.used_blocks -= slot.blocks
        slot.blocks = 0
        self._admit()

    def _preempt(self, slot: Slot) -> None:
        self._running.remove(slot)
        self.used_blocks -= slot.blocks
        slot.blocks, slot.running = 0, False
        self._waiting.appendleft(slot)
        self.preemptions += 1
        if self._on_preempt is not None:
            self._on_preempt()

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.max_running:
            head = self._waiting[0]
            need = self._blocks(head.tokens + 1)
            if need > self.total_blocks - self.used_blocks:
                return
            self._waiting.popleft()
            head.blocks, head.running = need, True
            head.admissions += 1
            self.used_blocks += need
            self._running.append(head)
            head.wake.set()
