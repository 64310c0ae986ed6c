"""Isolation forest over the joint residual features of all signals, and what each feature added.

Each signal alone may look ordinary while the combination does not (latency up while traffic is
down, tokens per request doubling while latency stays flat); a forest over every signal's
residual, recent mean and jump isolates such rows quickly, but only if some feature shows the
combination: axis-parallel splits on per-signal features see (2, -2) of two signals that always
move together as no odder than (2, 2). So each signal also gets a *cross residual*: how far its
residual is from what the other signals' residuals predict, from the training residuals'
shrunk precision matrix ``P`` (``cross_i = (P z)_i / sqrt(P_ii)``, the standardised error of
regressing signal ``i`` on all others, one matrix product per row for every signal at once).
Signals that move together in training predict each other, and their decoupling is a cross
residual of many deviations; unrelated signals predict nothing, and their cross residual is
their own residual.

Contributions (:meth:`IsolationForestDetector.contributions`) split a row's score exactly among
the features by path shortening. A tree node holding ``n`` training points leaves an expected
``c(n)`` more steps to isolation (the average path length of the iForest paper); a split on
feature ``f`` that sends the row to a child holding ``m`` points costs one step and leaves
``c(m)``, so it shortens the path by ``c(n) - 1 - c(m)`` (much for a split that cuts the row off
from most of the data, less than nothing for one that keeps it with the bulk). Along the row's
path these terms add up to ``c(max_samples) - h`` (``h`` its path length in that tree), so summed
over features and averaged over trees, in units of ``c(max_samples)``, they equal
``1 + log2(score)`` — zero for a row as isolated as an average one. This was chosen over the
absolute robust z times split-usage importance (a heuristic: it credits features the row's own
paths never split on) and leave-one-feature-out rescoring (a forest pass per feature, and two
features that are both extreme each get little, as either alone still isolates the row): it
reads the paths that produced the score, shares credit between the features of a joint anomaly,
costs one ``apply`` per tree for the rows asked about, is deterministic, and needs nothing stored
at fit time, so models fitted before it was written can be explained too.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from detector.core.base import (
    BaseDetector,
    Directions,
    check_directions,
    check_frame,
    check_range,
    direction_for,
)
from detector.core.features import Window, residual_feature_array, residual_features

__all__ = ["IsolationForestDetector"]

JOINT = "joint"
# How far the residuals' covariance is shrunk towards its diagonal before it is inverted.
_SHRINK = 0.1


class IsolationForestDetector(BaseDetector):
    """scikit-learn ``IsolationForest`` on a frame of signed standardised residuals.

    The output has one column, ``"joint"``. Residuals against a signal's direction are clipped to
    0 first, so a latency drop is not reported for a signal configured to alert only upwards.

    Parameters
    ----------
    n_estimators, max_samples : int
        Passed to ``IsolationForest``.
    window : int
        Points in the recent-mean feature.
    max_train : int
        At most this many training rows (a random subset) are used to grow the trees.
    directions : str or dict
        Alert direction for every signal, or a mapping signal -> direction (default ``"both"``).
    random_state : int
        Seed for the forest and the subsample.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> idx = pd.date_range("2026-01-05", periods=500, freq="30s")
    >>> z = pd.DataFrame(rng.normal(size=(500, 2)), index=idx, columns=["a", "b"])
    >>> det = IsolationForestDetector(random_state=0).fit(z)
    >>> odd = pd.DataFrame({"a": [6.0], "b": [-6.0]}, index=idx[-1:] + pd.Timedelta("30s"))
    >>> bool(det.score(odd)["joint"].iloc[0] > det.train_scores_["joint"].quantile(0.99))
    True
    >>> spike = pd.DataFrame({"a": [0.0], "b": [7.0]}, index=odd.index)
    >>> credit = det.contributions(det.features(spike)).iloc[0]
    >>> exact = 1 + np.log2(det.score(spike)["joint"].iloc[0])
    >>> credit.idxmax().split(":")[0], bool(np.isclose(credit.sum(), exact))
    ('b', True)
    """

    joint = True

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_samples: int = 256,
        window: int = 8,
        max_train: int = 20_000,
        directions: Directions = "both",
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.window = window
        self.max_train = max_train
        self.directions = directions
        self.random_state = random_state

    def _validate_params(self) -> None:
        check_range("n_estimators", self.n_estimators, 1, 10_000)
        check_range("max_samples", self.max_samples, 2, 1_000_000)
        check_range("window", self.window, 2, 10_000)
        check_range("max_train", self.max_train, 10, 1e9)
        check_directions(self.directions)

    def _directional(self, z: np.ndarray) -> np.ndarray:
        """Residuals (columns in ``signals_`` order) with those against the direction at 0."""
        out = z.copy()
        for j, name in enumerate(self.signals_):
            direction = direction_for(self.directions, name)
            if direction == "up":
                out[:, j] = np.maximum(out[:, j], 0.0)
            elif direction == "down":
                out[:, j] = np.minimum(out[:, j], 0.0)
        return out

    def _fit_model(self, frame: pd.DataFrame) -> Window:
        self.signals_ = list(frame.columns)
        self.input_columns_, self.output_columns_ = self.signals_, [JOINT]
        z = self._directional(frame.to_numpy())
        self.coupling_ = _coupling(z) if z.shape[1] > 1 else None
        start = Window(self._width(), self.window)
        feats = residual_features(self._joint_frame(z, frame.index), start)
        rng = np.random.default_rng(self.random_state)
        rows = feats.to_numpy()
        if rows.shape[0] > self.max_train:
            rows = rows[rng.choice(rows.shape[0], size=int(self.max_train), replace=False)]
        self.forest_ = IsolationForest(
            n_estimators=int(self.n_estimators),
            max_samples=min(int(self.max_samples), rows.shape[0]),
            random_state=self.random_state,
        ).fit(rows)
        self.feature_names_ = list(feats.columns)
        return Window(self._width(), int(self.window))

    def _width(self) -> int:
        """Columns the window features are taken over: the residuals, then the cross ones."""
        return len(self.signals_) * (1 if getattr(self, "coupling_", None) is None else 2)

    def _joint(self, z: np.ndarray) -> np.ndarray:
        """Directional residuals, followed by their cross residuals when there are several."""
        coupling = getattr(self, "coupling_", None)  # models fitted before cross residuals
        if coupling is None:
            return z
        missing = np.isnan(z)
        cross = np.nan_to_num(z, nan=0.0) @ coupling.T
        cross[missing] = np.nan  # a signal without a value has no cross residual either
        return np.hstack([z, cross])

    def _joint_frame(self, z: np.ndarray, index: pd.Index) -> pd.DataFrame:
        names = list(self.signals_)
        if self._width() > len(names):
            names += [f"{name}:cross" for name in self.signals_]
        return pd.DataFrame(self._joint(z), index=index, columns=names)

    def _directional_frame(self, z: pd.DataFrame) -> pd.DataFrame:
        values = self._directional(z.reindex(columns=self.signals_).to_numpy())
        return self._joint_frame(values, z.index)

    def _step(self, values: np.ndarray, state: Window) -> tuple[np.ndarray, Window]:
        feats = residual_feature_array(self._joint(self._directional(values)), state)
        if feats.shape[0] == 0:
            return np.zeros((0, 1)), state
        # scikit-learn's score_samples is higher for normal rows: this is the one sign flip.
        return -self.forest_.score_samples(feats)[:, None], state

    # -- contributions ------------------------------------------------------------------------
    def features(self, frame: pd.DataFrame, state: Window | None = None) -> pd.DataFrame:
        """The forest's feature rows for residual rows; the detector is not changed.

        Parameters
        ----------
        frame : DataFrame
            Standardised residuals, one column per signal, as given to ``score``.
        state : Window, optional
            Streaming state the rows follow (copied); default the current one, as ``score`` uses.

        Returns
        -------
        DataFrame
            One column per name in ``feature_names_`` (``<signal>:z``, ``:mean``, ``:jump``).
        """
        self._check_fitted()
        start = copy.deepcopy(self.state_ if state is None else state)
        return residual_features(self._directional_frame(check_frame(frame)), start)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame:
        """How much each feature shortened the rows' isolation paths (see the module docstring).

        Parameters
        ----------
        features : DataFrame
            Feature rows, as :meth:`features` returns them.

        Returns
        -------
        DataFrame
            Same index, one column per feature; each row sums to ``1 + log2(raw score)``.
            Positive values pushed the row towards anomalous, negative ones towards normal.
        """
        self._check_fitted()
        x = features.reindex(columns=self.feature_names_).to_numpy(dtype=np.float32)
        credit = _path_credit(self.forest_, x)
        return pd.DataFrame(credit, index=features.index, columns=self.feature_names_)


def _coupling(z: np.ndarray) -> np.ndarray:
    """Rows ``P_i / sqrt(P_ii)`` of the shrunk precision matrix of the training residuals.

    Residuals are clipped at +-5 (a training incident should not teach that signals decouple)
    and missing ones count as 0; the covariance is shrunk a tenth of the way to its diagonal,
    so that it can be inverted with more signals than rows and no pair is taken as exactly
    collinear.
    """
    x = np.clip(np.nan_to_num(z, nan=0.0, posinf=5.0, neginf=-5.0), -5.0, 5.0)
    cov = x.T @ x / max(x.shape[0], 1)
    diag = np.maximum(np.diag(cov), 1e-6)
    shrunk = (1.0 - _SHRINK) * cov
    shrunk[np.diag_indices_from(shrunk)] = diag
    precision = np.linalg.pinv(shrunk, hermitian=True)
    return precision / np.sqrt(np.maximum(np.diag(precision), 1e-12))[:, None]


def _average_path(n: np.ndarray) -> np.ndarray:
    """``c(n)``: expected path length to isolate a point among ``n`` (as scikit-learn has it)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.where(n == 2, 1.0, 0.0)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _path_credit(forest: IsolationForest, x: np.ndarray) -> np.ndarray:
    """Per-row, per-feature path shortening, averaged over trees, in units of ``c(max_samples)``."""
    rows, n_features = x.shape
    row_base = np.arange(rows) * n_features
    where, credit = [], []
    for tree, used in zip(forest.estimators_, forest.estimators_features_, strict=True):
        nodes = tree.tree_
        left, right = nodes.children_left, nodes.children_right
        inner = np.flatnonzero(left >= 0)
        parent = np.full(nodes.node_count, -1)
        parent[left[inner]] = inner
        parent[right[inner]] = inner
        c = _average_path(nodes.n_node_samples)
        # The tree sees the columns ``used`` in its own order; leaves' feature is -2.
        split_on = np.asarray(used)[np.maximum(nodes.feature, 0)]
        # The same leaves score_samples reaches: the tree's own float32 input, unchecked.
        node = tree.apply(np.ascontiguousarray(x[:, used]), check_input=False)
        up = parent[node]
        # Walk every row's path from its leaf to the root at once, one level per step.
        while (ok := up >= 0).any():
            where.append(row_base[ok] + split_on[up[ok]])
            credit.append(c[up[ok]] - 1.0 - c[node[ok]])
            node = np.where(ok, up, node)
            up = np.where(ok, parent[node], -1)
    total = np.bincount(
        np.concatenate([np.zeros(0, np.int64), *where]),
        weights=np.concatenate([np.zeros(0), *credit]),
        minlength=rows * n_features,
    )
    scale = len(forest.estimators_) * float(_average_path(np.array([forest.max_samples_]))[0])
    return total.reshape(rows, n_features) / max(scale, 1e-12)
