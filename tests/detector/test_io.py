"""Tests of reading the backtest's input CSV and writing its output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.io import InputError, read_series_csv, write_scores_csv


def csv(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_signals_and_keeps_timestamp_text(tmp_path: Path) -> None:
    text = "timestamp,rps,lat\n2026-01-05 00:00:00,1,0.5\n2026-01-05 00:05:00,2,0.6\n"
    path = csv(tmp_path, text)
    frame, stamps = read_series_csv(path)
    assert list(frame.columns) == ["rps", "lat"]
    assert frame.index.name == "timestamp"
    assert frame.index.equals(pd.DatetimeIndex(["2026-01-05 00:00", "2026-01-05 00:05"]))
    assert frame.dtypes.tolist() == [np.float64, np.float64]
    assert stamps.tolist() == ["2026-01-05 00:00:00", "2026-01-05 00:05:00"]


def test_whitespace_gaps_and_number_forms(tmp_path: Path) -> None:
    text = (
        "timestamp , value\n"
        " 2026-01-05 00:00:00 , 1e3 \n"
        "2026-01-05 00:05:00,\n"
        "2026-01-05 00:10:00,NaN\n"
        "2026-01-05 00:15:00,null\n"
        "2026-01-05 00:20:00,NA\n"
        "2026-01-05 00:25:00,-2.5\n"
        "2026-01-05 00:30:00,+4\n"
    )
    frame, _ = read_series_csv(csv(tmp_path, text))
    values = frame["value"].to_numpy()
    assert values[0] == 1000.0
    assert np.isnan(values[1:5]).all()
    assert values[5:].tolist() == [-2.5, 4.0]


def test_utc_offsets_are_converted(tmp_path: Path) -> None:
    text = (
        "timestamp,value\n"
        "2026-03-29T02:30:00+02:00,1\n"  # 00:30 UTC, summer time
        "2026-03-29T00:40:00Z,2\n"
        "2026-03-29T01:50:00+01:00,3\n"  # 00:50 UTC, winter time
    )
    frame, stamps = read_series_csv(csv(tmp_path, text))
    assert frame.index.tz is None
    assert [t.strftime("%H:%M") for t in frame.index] == ["00:30", "00:40", "00:50"]
    assert stamps.tolist()[0] == "2026-03-29T02:30:00+02:00"


def test_unix_seconds_with_fractions(tmp_path: Path) -> None:
    frame, stamps = read_series_csv(csv(tmp_path, "timestamp,v\n1767571200,1\n1767571500.5,2\n"))
    assert frame.index[0] == pd.Timestamp("2026-01-05 00:00:00")
    assert frame.index[1] == pd.Timestamp("2026-01-05 00:05:00.5")
    assert stamps.tolist() == ["1767571200", "1767571500.5"]


def test_rows_are_sorted_with_their_timestamp_text(tmp_path: Path) -> None:
    text = "timestamp,v\n2026-01-05 00:10:00,3\n2026-01-05 00:00:00,1\n2026-01-05 00:05:00,2\n"
    frame, stamps = read_series_csv(csv(tmp_path, text))
    assert frame["v"].tolist() == [1.0, 2.0, 3.0]
    assert stamps.tolist() == ["2026-01-05 00:00:00", "2026-01-05 00:05:00", "2026-01-05 00:10:00"]
    assert frame.index.is_monotonic_increasing


def test_timestamp_column_need_not_come_first(tmp_path: Path) -> None:
    frame, _ = read_series_csv(csv(tmp_path, "v,timestamp\n1,2026-01-05 00:00:00\n"))
    assert list(frame.columns) == ["v"]
    assert frame["v"].tolist() == [1.0]


def test_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftimestamp,v\r\n2026-01-05 00:00:00,1\r\n")
    frame, stamps = read_series_csv(path)
    assert frame["v"].tolist() == [1.0]
    assert stamps.tolist() == ["2026-01-05 00:00:00"]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("", ["empty"]),
        ("timestamp,value\n", ["no data rows"]),
        ("time,value\n2026-01-05,1\n", ["'timestamp'", "time,value"]),
        ("timestamp\n2026-01-05\n", ["no signal columns"]),
        ("timestamp,v\n2026-01-05 00:00:00,1\n,2\n", ["timestamp ''", "row 2"]),
        ("timestamp,v\n1767571200,1\n2026-01-05 00:05:00,2\n", ["timestamp", "row 1"]),
        ('timestamp,v\n2026-01-05 00:00:00,1\n2026-01-05 00:05:00,"1,5"\n', ["'1,5'", "'v'"]),
        ("timestamp,v\n2026-01-05 00:00:00,1\n2026-01-05 00:05:00,2,3\n", ["readable CSV"]),
    ],
)
def test_bad_input_one_line_reason(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = csv(tmp_path, text)
    with pytest.raises(InputError) as exc:
        read_series_csv(path)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message
    assert isinstance(exc.value, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_series_csv(tmp_path / "absent.csv")


def test_trailing_commas_are_not_misread(tmp_path: Path) -> None:
    text = "timestamp,value\n2026-01-05 00:00:00,1,\n2026-01-05 00:05:00,2,\n"
    try:
        frame, _ = read_series_csv(csv(tmp_path, text))
    except InputError:
        return  # refusing the file is fine too
    assert frame.index[0] == pd.Timestamp("2026-01-05 00:00:00")
    assert frame["value"].tolist() == [1.0, 2.0]


def test_write_scores_csv(tmp_path: Path) -> None:
    stamps = pd.Series(["2026-01-05T00:00:00Z", "2026-01-05T00:05:00Z"])
    scores = pd.DataFrame(
        {"anomaly_score": [0.123456789, 1.0], "anomalous": np.array([0, 1], dtype=np.int8)},
        index=pd.DatetimeIndex(["2026-01-05 00:00", "2026-01-05 00:05"]),
    )
    target = tmp_path / "deep" / "folder" / "out.csv"
    write_scores_csv(target, stamps, scores)
    lines = target.read_text().splitlines()
    assert lines == [
        "timestamp,anomaly_score,anomalous",
        "2026-01-05T00:00:00Z,0.123457,0",
        "2026-01-05T00:05:00Z,1,1",
    ]
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]  # no temporary left


def test_write_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old contents\n")
    scores = pd.DataFrame({"anomaly_score": [0.5]})
    write_scores_csv(target, pd.Series(["t0"]), scores)
    assert target.read_text().splitlines() == ["timestamp,anomaly_score", "t0,0.5"]


def test_round_trip_of_read_and_write(tmp_path: Path) -> None:
    text = "timestamp,v\n2026-01-05 00:10:00,3\n2026-01-05 00:00:00,1\n"
    frame, stamps = read_series_csv(csv(tmp_path, text))
    write_scores_csv(tmp_path / "out.csv", stamps, frame.rename(columns={"v": "v_score"}))
    back = pd.read_csv(tmp_path / "out.csv", dtype={"timestamp": str})
    assert back["timestamp"].tolist() == ["2026-01-05 00:00:00", "2026-01-05 00:10:00"]
    assert back["v_score"].tolist() == [1.0, 3.0]
