"""Tests of the level trackers: stepping all signals together equals running them one by one."""

from __future__ import annotations

import numpy as np
import pytest

from detector.tracking import Track, Tracks, track_level, track_levels

FIELDS = ("level", "last_t", "run_sign", "run_start", "run_sum", "run_n")


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


def assert_same_state(a: Tracks, b: Tracks) -> None:
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("accept_points", "accept_s"), [(1, 0.0), (3, 0.0), (3, 900.0)])
def test_by_row_equals_by_signal_across_calls(seed: int, accept_points: int, accept_s: float):
    rng = np.random.default_rng(seed)
    rows, n = 60, 7
    t, d, lim = rough_series(rng, rows, n)
    halflife = rng.uniform(30.0, 20_000.0, n)
    together, apart = Tracks.start(n), Tracks.start(n)
    for lo, hi in ((0, 1), (1, 2), (2, 25), (25, 25), (25, rows)):
        args = (t[lo:hi], d[lo:hi], lim[lo:hi])
        a = track_levels(*args, together, halflife, accept_points, accept_s, by_row=True)
        b = track_levels(*args, apart, halflife, accept_points, accept_s, by_row=False)
        np.testing.assert_array_equal(a, b)  # bit for bit, NaN where the value is missing
        assert_same_state(together, apart)
    assert np.isfinite(together.level).all()


def test_by_signal_is_track_level_on_each_column() -> None:
    rng = np.random.default_rng(9)
    t, d, lim = rough_series(rng, 40, 3)
    halflife = np.array([60.0, 600.0, 6000.0])
    tracks = Tracks.start(3)
    out = track_levels(t, d, lim, tracks, halflife, 3, 0.0, by_row=False)
    for j in range(3):
        single = Track()
        expected = track_level(t, d[:, j], lim[:, j], single, halflife[j], 3, 0.0)
        np.testing.assert_array_equal(out[:, j], expected)
        assert tracks.get(j) == single


def test_default_choice_gives_the_same_levels() -> None:
    rng = np.random.default_rng(3)
    t, d, lim = rough_series(rng, 30, 50)
    halflife = np.full(50, 900.0)
    auto, forced = Tracks.start(50), Tracks.start(50)
    np.testing.assert_array_equal(
        track_levels(t, d, lim, auto, halflife, 3, 0.0),
        track_levels(t, d, lim, forced, halflife, 3, 0.0, by_row=False),
    )
    assert_same_state(auto, forced)


def test_a_run_outside_the_clip_becomes_the_level() -> None:
    t = np.arange(6) * 60.0
    d = np.array([[0.0], [0.0], [10.0], [10.0], [10.0], [10.0]])
    for by_row in (True, False):
        tracks = Tracks.start(1)
        out = track_levels(t, d, np.ones_like(d), tracks, np.array([1e9]), 3, 0.0, by_row=by_row)
        # Clipped moves are negligible with this half-life; the third point outside is accepted.
        np.testing.assert_allclose(out[:5, 0], 0.0, atol=1e-6)
        assert out[5, 0] == 10.0 and tracks.level[0] == 10.0 and tracks.run_n[0] == 0


def test_get_and_put_round_trip() -> None:
    tracks = Tracks.start(2)
    track = Track(level=1.5, last_t=60.0, run_sign=-1, run_start=30.0, run_sum=-4.0, run_n=2)
    tracks.put(1, track)
    assert tracks.get(1) == track
    assert np.isnan(tracks.get(0).level)
