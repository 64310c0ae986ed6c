"""Tests of the compiled level trackers against their plain-Python definition, and of the shape
checks that keep the compiled loop within its arrays."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from detector.core.smoothing import Tracks, track_levels
from detector.registry.modelfile import dumps, loads

FIELDS = ("level", "last_t", "run_sign", "run_start", "run_sum", "run_n")


def reference(
    t: np.ndarray,
    d: np.ndarray,
    lim: np.ndarray,
    state: dict[str, float],
    halflife: float,
    accept_points: int,
    accept_s: float,
) -> np.ndarray:
    """One tracker, point by point, written for reading rather than speed; updates ``state``."""
    out = np.full(d.size, np.nan)
    s = state
    for i in range(d.size):
        if not math.isfinite(d[i]):
            continue
        if math.isnan(s["level"]):
            s["level"], s["last_t"], out[i] = d[i], t[i], d[i]
            continue
        out[i] = s["level"]
        gain = -math.expm1(-math.log(2.0) / halflife * max(t[i] - s["last_t"], 0.0))
        s["last_t"] = t[i]
        r = d[i] - s["level"]
        if abs(r) > lim[i]:
            sign = 1 if r > 0 else -1
            if sign != s["run_sign"]:
                s.update(run_sign=sign, run_start=t[i], run_sum=0.0, run_n=0)
            s["run_sum"] += d[i]
            s["run_n"] += 1
            if s["run_n"] >= accept_points and t[i] - s["run_start"] >= accept_s:
                s["level"] = s["run_sum"] / s["run_n"]
                s.update(run_sign=0, run_sum=0.0, run_n=0)
                continue
            r = sign * lim[i]
        elif r * s["run_sign"] < 0:
            s.update(run_sign=0, run_sum=0.0, run_n=0)
        s["level"] += gain * r
    return out


def fresh_state() -> dict[str, float]:
    return dict(level=math.nan, last_t=math.nan, run_sign=0, run_start=0.0, run_sum=0.0, run_n=0)


def rough_series(rng: np.random.Generator, rows: int, n: int) -> tuple[np.ndarray, ...]:
    """Times with repeats and long gaps; values with jumps, runs outside the clip and NaN."""
    t = 1.7e9 + np.cumsum(rng.choice([0.0, 60.0, 300.0, 3600.0], size=rows))
    jumps = (rng.random((rows, n)) < 0.2) * rng.normal(0.0, 8.0, (rows, n))
    shift = np.where(np.arange(rows)[:, None] > rows // 2, rng.normal(0.0, 6.0, n), 0.0)
    d = rng.normal(size=(rows, n)) + jumps + shift
    d[rng.random((rows, n)) < 0.15] = np.nan
    d[: rows // 5, 0] = np.nan  # a tracker that sees nothing for a while
    lim = rng.uniform(0.5, 3.0, (rows, n))
    return t, d, lim


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("accept_points", "accept_s"), [(1, 0.0), (3, 0.0), (3, 900.0)])
def test_blocks_of_rows_equal_the_definition_bit_for_bit(
    seed: int, accept_points: int, accept_s: float
) -> None:
    rng = np.random.default_rng(seed)
    rows, n = 60, 7
    t, d, lim = rough_series(rng, rows, n)
    halflife = rng.uniform(30.0, 20_000.0, n)
    tracks = Tracks.start(n)
    states = [fresh_state() for _ in range(n)]
    for lo, hi in ((0, 1), (1, 2), (2, 25), (25, 25), (25, rows)):
        got = track_levels(
            t[lo:hi], d[lo:hi], lim[lo:hi], tracks, halflife, accept_points, accept_s
        )
        for j in range(n):
            want = reference(
                t[lo:hi],
                d[lo:hi, j],
                lim[lo:hi, j],
                states[j],
                halflife[j],
                accept_points,
                accept_s,
            )
            np.testing.assert_array_equal(got[:, j], want)  # NaN where the value is missing
        for field in FIELDS:
            want = [s[field] for s in states]
            np.testing.assert_array_equal(getattr(tracks, field), want, err_msg=field)
    assert np.isfinite(tracks.level).all()


def test_a_run_outside_the_clip_becomes_the_level() -> None:
    t = np.arange(6) * 60.0
    d = np.array([[0.0], [0.0], [10.0], [10.0], [10.0], [10.0]])
    tracks = Tracks.start(1)
    out = track_levels(t, d, np.ones_like(d), tracks, np.array([1e9]), 3, 0.0)
    # Clipped moves are negligible with this half-life; the third point outside is accepted.
    np.testing.assert_allclose(out[:5, 0], 0.0, atol=1e-6)
    assert out[5, 0] == 10.0 and tracks.level[0] == 10.0 and tracks.run_n[0] == 0


def test_a_run_must_last_accept_s_before_it_is_accepted() -> None:
    t = np.arange(8) * 60.0
    d = np.r_[0.0, np.full(7, 10.0)][:, None]
    tracks = Tracks.start(1)
    out = track_levels(t, d, np.ones_like(d), tracks, np.array([1e9]), 3, 300.0)
    # Points outside from t=60 on; three of them are not enough until the run spans 300 s.
    assert np.all(np.abs(out[:7, 0]) < 1e-3) and out[7, 0] == 10.0


def test_the_gain_follows_elapsed_time_not_rows() -> None:
    d = np.array([[0.0], [1.0]])
    lim = np.full_like(d, 100.0)
    for gap, want in ((60.0, 0.5), (120.0, 0.75)):
        tracks = Tracks.start(1)
        track_levels(np.array([0.0, gap]), d, lim, tracks, np.array([60.0]), 3, 0.0)
        assert tracks.level[0] == pytest.approx(want)


def _args(n: int = 3, rows: int = 4) -> dict[str, Any]:
    """Arguments of a well-formed call: ``rows`` rows of ``n`` signals."""
    d = np.zeros((rows, n))
    return dict(
        t=np.arange(rows) * 60.0,
        d=d,
        lim=np.ones_like(d),
        st=Tracks.start(n),
        halflife=np.full(n, 600.0),
        accept_points=3,
        accept_s=0.0,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d": np.zeros(4)}, r"d must be 2-D"),
        ({"t": np.arange(5.0)}, r"t has shape \(5,\); d has 4 rows"),
        ({"lim": np.ones((4, 2))}, r"lim has shape \(4, 2\); d has shape \(4, 3\)"),
        ({"lim": np.ones((4, 3, 1))}, r"lim has shape \(4, 3, 1\)"),
        ({"halflife": np.full(2, 600.0)}, r"halflife has shape \(2,\); d has 3 columns"),
        ({"halflife": 600.0}, r"halflife has shape \(\); d has 3 columns"),
        ({"level": np.full(2, np.nan)}, r"Tracks.level has shape \(2,\); d has 3 columns"),
        ({"run_n": np.zeros((3, 1), dtype=np.int64)}, r"Tracks.run_n has shape \(3, 1\)"),
        ({"run_sum": [0.0, 0.0, 0.0]}, r"Tracks.run_sum is a list, not an array"),
    ],
)
def test_mismatched_shapes_are_refused_before_the_compiled_loop(
    change: dict[str, Any], message: str
) -> None:
    """A crafted model file can give the state arrays of any length: the kernel must not run."""
    args = _args()
    state = {k: v for k, v in change.items() if k in FIELDS}
    args.update({k: v for k, v in change.items() if k not in FIELDS})
    for field, value in state.items():
        setattr(args["st"], field, value)
    before = {field: np.copy(getattr(args["st"], field)) for field in FIELDS}
    with pytest.raises(ValueError, match=message):
        track_levels(**args)
    for field, value in before.items():
        np.testing.assert_array_equal(getattr(args["st"], field), value)  # left untouched


def test_well_formed_arguments_pass_the_shape_checks() -> None:
    args = _args(n=1, rows=0)
    assert track_levels(**args).shape == (0, 1)
    args = _args()
    assert track_levels(**args).shape == (4, 3) and np.all(args["st"].level == 0.0)


def test_state_of_the_wrong_length_from_a_model_file_is_refused() -> None:
    """The model file builds a Tracks (an allowed class) with whatever arrays it holds."""
    args = _args()
    args["st"] = loads(dumps(Tracks.start(2)))
    with pytest.raises(ValueError, match=r"Tracks.level has shape \(2,\); d has 3 columns"):
        track_levels(**args)
