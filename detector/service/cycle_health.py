"""What is wrong with the detector's cycles right now, and what ``/health`` says about it.

A cycle pulls each signal, scores it, records its events and publishes what readers see; fits
run beside it. Any of these stages can fail for one signal while the others go on. Each failure
is counted (``llmwatch_cycle_errors_total{stage}``) and stays a *problem* until the same stage
succeeds again for that signal, and while any problem stands ``/health`` answers 503 with the
reasons, so the detector never goes blind while saying it is fine.

>>> health = CycleHealth()
>>> health.fail("record", "errors", "disk full")
>>> health.verdict(models_missing=[], any_model=True)
(False, 'record errors: disk full')
>>> health.succeed("record", "errors")
>>> health.verdict(models_missing=[], any_model=True), health.errors["record"]
((True, 'ok'), 1)
"""

from __future__ import annotations

from collections import Counter

__all__ = ["STAGES", "CycleHealth"]

# pull: querying the source; score: scoring the new rows; record: writing events; fit: refitting
# a model; publish: building what the API and /metrics read.
STAGES = ("pull", "score", "record", "fit", "publish")


class CycleHealth:
    """Failures per (stage, signal): counted for ever, standing until that stage succeeds."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter({stage: 0 for stage in STAGES})
        self._problems: dict[tuple[str, str], str] = {}

    def fail(self, stage: str, signal: str, reason: str) -> None:
        """``stage`` failed for ``signal`` (``""`` for the whole cycle) because of ``reason``."""
        self.errors[stage] += 1
        self._problems[(stage, signal)] = reason

    def succeed(self, stage: str, signal: str) -> None:
        """``stage`` worked for ``signal``: its problem, if any, is over."""
        self._problems.pop((stage, signal), None)

    def problems(self, stage: str | None = None) -> list[str]:
        """The standing problems (of one stage), as ``"<stage> <signal>: <reason>"``."""
        return [
            f"{s} {sig}: {why}".replace("  ", " ")
            for (s, sig), why in self._problems.items()
            if stage is None or s == stage
        ]

    def verdict(self, *, models_missing: list[str], any_model: bool) -> tuple[bool, str]:
        """``(ok, reason)`` for ``/health``: every standing problem, then missing models."""
        standing = self.problems()
        if standing:
            return False, "; ".join(standing)
        if not any_model:
            return False, "no model loaded yet"
        if models_missing:
            return False, f"no model loaded for {', '.join(models_missing)}"
        return True, "ok"
