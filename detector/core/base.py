"""The one scoring contract every detector family follows.

Higher raw scores mean more anomalous; raw scores are finite and non-negative; rows that cannot be
scored yet (warm-up, missing values) score 0. ``fit`` learns the model from a training frame and the
streaming state at the end of it; scoring continues from that state, keeping the new state only
when ``advance`` is true (the one way to score without changing a model: from a copy of the
state). ``run(values, advance=...)`` scores arrays, as the ensemble does; ``score`` and ``update``
score a frame (checked, then converted once each way), so ``score(A + B)`` equals ``update(A)``
followed by ``update(B)``.

The ensemble fits and runs every family the same way on what its baseline's decomposition gives
the family (:meth:`BaseDetector.inputs`); a family flagged ``joint`` scores all signals together
in one column.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from detector.core.families.decomposition import Decomposition, Parts

__all__ = [
    "DIRECTIONS",
    "BaseDetector",
    "Directions",
    "NotFittedError",
    "ParamsMixin",
    "apply_direction",
    "apply_directions",
    "check_choice",
    "check_directions",
    "check_frame",
    "check_range",
    "direction_for",
    "directional_scores",
    "infinite_as_missing",
]

DIRECTIONS = ("up", "down", "both")
_HUGE = 1e300


class NotFittedError(ValueError, AttributeError):
    """Raised when a detector is used before ``fit``."""


def check_range(name: str, value: float, low: float, high: float, *, closed: str = "both") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is in range (ends per ``closed``)."""
    lo_ok = value >= low if closed in ("both", "left") else value > low
    hi_ok = value <= high if closed in ("both", "right") else value < high
    if not (np.isfinite(value) and lo_ok and hi_ok):
        lb = "[" if closed in ("both", "left") else "("
        rb = "]" if closed in ("both", "right") else ")"
        raise ValueError(f"{name}={value!r} is out of range; allowed {lb}{low}, {high}{rb}")


def check_choice(name: str, value: object, allowed: tuple[object, ...]) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")


def check_frame(frame: pd.DataFrame, *, keep_infinite: bool = False) -> pd.DataFrame:
    """Validate a time-indexed frame of float signals and return it as float64, sorted by time.

    Infinite values become missing unless ``keep_infinite``.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise TypeError("the frame must have a DatetimeIndex (one row per timestamp)")
    if frame.shape[1] == 0:
        raise ValueError("the frame has no signal columns")
    out = frame if (frame.dtypes == np.float64).all() else frame.astype("float64")
    if not out.index.is_monotonic_increasing:
        out = out.sort_index(kind="stable")
    return out if keep_infinite else infinite_as_missing(out)


def infinite_as_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with infinite values as NaN (the same frame when it has none)."""
    if np.isinf(frame.to_numpy()).any():
        return frame.replace([np.inf, -np.inf], np.nan)
    return frame


Directions = str | dict[str, str]


def direction_for(directions: Directions, signal: str) -> str:
    """The direction configured for ``signal``: one for all, or a mapping (default ``"both"``)."""
    if isinstance(directions, dict):
        return directions.get(signal, "both")
    return directions


def check_directions(directions: Directions) -> None:
    """Raise ``ValueError`` naming any direction that is not up, down or both."""
    values = directions.values() if isinstance(directions, dict) else [directions]
    for direction in values:
        check_choice("directions", direction, DIRECTIONS)


def apply_direction(z: np.ndarray, direction: str) -> np.ndarray:
    """Turn signed deviations into non-negative scores for an alert direction.

    >>> apply_direction(np.array([-2.0, 0.5, 3.0]), "up").tolist()
    [0.0, 0.5, 3.0]
    """
    if direction == "up":
        out = np.maximum(z, 0.0)
    elif direction == "down":
        out = np.maximum(-z, 0.0)
    else:
        out = np.abs(z)
    # An infinite deviation (a value beyond float range) is as anomalous as a score gets.
    return np.nan_to_num(out, nan=0.0, posinf=_HUGE)


def apply_directions(z: np.ndarray, directions: Directions, signals: list[str]) -> np.ndarray:
    """:func:`apply_direction` for a (rows, signals) array, each column with its direction.

    >>> apply_directions(np.array([[-2.0, -2.0]]), {"a": "down"}, ["a", "b"]).tolist()
    [[2.0, 2.0]]
    """
    if isinstance(directions, str):
        return apply_direction(z, directions)
    wanted = np.array([direction_for(directions, name) for name in signals])
    out = np.empty_like(z, dtype=np.float64)
    for direction in DIRECTIONS:
        cols = wanted == direction
        if cols.any():
            out[:, cols] = apply_direction(z[:, cols], direction)
    return out


def directional_scores(z: pd.DataFrame, directions: Directions) -> pd.DataFrame:
    """:func:`apply_directions` of a frame of signed deviations, as a frame like it."""
    out = apply_directions(z.to_numpy(), directions, list(z.columns))
    return pd.DataFrame(out, index=z.index, columns=z.columns)


class ParamsMixin:
    """scikit-learn-style hyper-parameters: keyword arguments of ``__init__``, stored unchanged."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters as given to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set hyper-parameters; unknown names are an error."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"unknown parameter {name!r}; valid: {sorted(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class BaseDetector(ParamsMixin, ABC):
    """A detector family: learned state in attributes ending in ``_``, set only by ``fit``."""

    # A joint family scores every signal together, in one column (the isolation forest).
    joint: ClassVar[bool] = False
    # Where the calibration's tail starts (see :class:`~detector.core.calibration.TailCalibrator`).
    tail_quantile: ClassVar[float] = 0.98
    # An infinite input (a residual of a value near the float limit) is scored, as the largest
    # score, instead of taken as missing: for families that score a row on its own.
    keeps_infinite: ClassVar[bool] = False

    def _check_fitted(self) -> None:
        if not hasattr(self, "state_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit() first")

    @abstractmethod
    def _validate_params(self) -> None:
        """Check hyper-parameters; called at the start of ``fit``."""

    @abstractmethod
    def _fit_model(self, frame: pd.DataFrame) -> Any:
        """Learn the model's attributes from ``frame``; return the streaming state at its start."""

    def _step(self, values: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Score rows given as an array (columns in ``input_columns_`` order) from ``state``;
        return raw scores (columns in ``output_columns_`` order) and the state after them.

        Every family implements this; the seasonal baseline, which is no family of the ensemble,
        overrides :meth:`_run` instead.
        """
        raise NotImplementedError(f"{type(self).__name__} scores frames only")

    def _run(self, frame: pd.DataFrame, state: Any) -> tuple[pd.DataFrame, Any]:
        """:meth:`_step` of a frame: the public methods' edge, one conversion each way."""
        values = frame.reindex(columns=self.input_columns_).to_numpy()
        out, state = self._step(values, state)
        return pd.DataFrame(out, index=frame.index, columns=self.output_columns_), state

    def training_inputs(self, decomposition: Decomposition) -> pd.DataFrame:
        """What this family is fitted on from a baseline decomposition: the residuals ``z``."""
        return decomposition.z

    def inputs(self, parts: Parts) -> np.ndarray:
        """What this family scores of a baseline decomposition (arrays): the residuals ``z``."""
        return self._checked(parts.z)

    def _checked(self, values: np.ndarray) -> np.ndarray:
        """Internal rows as :meth:`score` would check them: infinite values become missing
        unless the family scores them."""
        if self.keeps_infinite or not np.isinf(values).any():
            return values
        return np.where(np.isinf(values), np.nan, values)

    @property
    def alarm_columns_(self) -> list[Any]:
        """The labels of :meth:`alarm_scores`' columns."""
        return list(self.output_columns_)

    def alarm_scores(self, scores: np.ndarray) -> np.ndarray:
        """The columns of the raw scores that are calibrated and may raise alarms: all."""
        return scores

    def holds(self, scores: np.ndarray) -> np.ndarray | None:
        """Per signal and row, how far a lasting deviation keeps an open event open; None here."""
        return None

    def fit(self, frame: pd.DataFrame) -> Self:
        """Fit on a training frame; its own scores are kept in ``train_scores_`` for calibration."""
        self._validate_params()
        frame = check_frame(frame, keep_infinite=self.keeps_infinite)
        initial = self._fit_model(frame)
        self.initial_state_ = copy.deepcopy(initial)
        self.train_scores_, self.state_ = self._run_training(frame, initial)
        return self

    def reset(self) -> Self:
        """Forget the streaming state: the next ``update`` starts as if no row had been seen."""
        self._check_fitted()
        self.state_ = copy.deepcopy(self.initial_state_)
        return self

    def _run_training(self, frame: pd.DataFrame, state: Any) -> tuple[pd.DataFrame, Any]:
        """Score the training frame itself; a family may keep more of it here."""
        return self._run(frame, state)

    def _state(self, advance: bool) -> Any:
        """The streaming state to continue from: the model's own, or a copy it will not see."""
        self._check_fitted()
        return self.state_ if advance else copy.deepcopy(self.state_)

    def run(self, values: np.ndarray, *, advance: bool) -> np.ndarray:
        """Raw scores of rows that follow the training data, as arrays (see :meth:`_step`);
        with ``advance`` the streaming state is kept for the next call."""
        out, state = self._step(values, self._state(advance))
        if advance:
            self.state_ = state
        return out

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Raw scores of rows that follow the training data; the detector is not changed."""
        out, _ = self._run(self._checked_frame(frame), self._state(False))
        return out

    def update(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Raw scores of new rows, keeping the streaming state for the next call."""
        out, self.state_ = self._run(self._checked_frame(frame), self._state(True))
        return out

    def _checked_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return check_frame(frame, keep_infinite=self.keeps_infinite)
