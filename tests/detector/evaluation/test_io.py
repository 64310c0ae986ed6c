"""Tests of reading the backtest's input CSV and writing its output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.evaluation.csvio import InputError, read_series_csv, write_scores_csv


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


# -- timestamps: rows, ranges, duplicates ---------------------------------------------------


def refusal(path: Path) -> str:
    """The one-line reason :func:`read_series_csv` gives for ``path``, which starts with it."""
    with pytest.raises(InputError) as exc:
        read_series_csv(path)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        # Unix seconds first, then a bad stamp: the bad one, on its own row (was row 1).
        ("timestamp,v\n1767571200,1\nabc,2\n1767571320,3\n", ["'abc'", "data row 2"]),
        (
            "timestamp,v\n2026-01-05 00:00:00,1\n2026-01-05 00:05:00,2\nsoon,3\n",
            ["'soon'", "row 3"],
        ),
        ("timestamp,v\n1767571200,1\n1767571260,2\n1767571320,x\n", ["'x'", "'v'", "row 3"]),
        ("timestamp,v\n\n1767571200,1\n\nabc,2\n", ["'abc'", "data row 2"]),  # blank lines
    ],
)
def test_bad_cells_are_reported_on_their_data_row(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    message = refusal(csv(tmp_path, text))
    for needle in needles:
        assert needle in message
    assert "row 1" not in message


def test_mixed_formats_name_both_rows(tmp_path: Path) -> None:
    message = refusal(csv(tmp_path, "timestamp,v\n2026-01-05 00:00:00,1\n1767571260,2\n"))
    assert "'1767571260' on data row 2 is Unix seconds" in message
    assert "data row 1 ('2026-01-05 00:00:00') is ISO-8601" in message


@pytest.mark.parametrize(
    ("first", "stamp"),
    [
        ("1767571200", "inf"),
        ("1767571200", "-inf"),
        ("1767571200", "1e20"),
        ("1767571200", "-5"),
        ("2026-01-05", "1900-01-01 00:00:00"),
        ("2026-01-05", "2200-01-01T00:00:00Z"),
        ("2026-01-05", "2500-06-01"),
    ],
)
def test_absurd_timestamps_name_file_value_and_row(tmp_path: Path, first: str, stamp: str) -> None:
    message = refusal(csv(tmp_path, f"timestamp,v\n{first},1\n{stamp},2\n", name="far.csv"))
    assert f"timestamp {stamp!r} on data row 2 is outside 1970-01-01 to 2200-01-01" in message


def test_milliseconds_get_a_hint(tmp_path: Path) -> None:
    message = refusal(csv(tmp_path, "timestamp,v\n1767571200000,1\n"))
    assert "'1767571200000' on data row 1" in message
    assert "milliseconds" in message


def test_the_bounds_themselves(tmp_path: Path) -> None:
    text = "timestamp,v\n1970-01-01 00:00:00,1\n2199-12-31T23:59:59Z,2\n"
    frame, _ = read_series_csv(csv(tmp_path, text))
    assert frame.index.tolist() == [
        pd.Timestamp("1970-01-01"),
        pd.Timestamp("2199-12-31 23:59:59"),
    ]
    frame, _ = read_series_csv(csv(tmp_path, "timestamp,v\n0,1\n7258118399,2\n", name="u.csv"))
    assert frame.index[-1] == pd.Timestamp("2199-12-31 23:59:59")


def read_noting(path: Path) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """:func:`read_series_csv` with the lines it warns collected."""
    notes: list[str] = []
    frame, stamps = read_series_csv(path, warn=notes.append)
    return frame, stamps, notes


def test_one_duplicated_timestamp_is_merged_last_value_wins(tmp_path: Path) -> None:
    text = "timestamp,v\n1767571200,1\n1767571260,2\n1767571260,2.3\n1767571320,3\n"
    path = csv(tmp_path, text, name="dup_one.csv")
    frame, stamps, notes = read_noting(path)
    assert frame["v"].tolist() == [1.0, 2.3, 3.0]
    assert frame.index.is_unique and frame.index.is_monotonic_increasing
    assert frame.index.name == "timestamp"
    assert stamps.tolist() == ["1767571200", "1767571260", "1767571260", "1767571320"]
    assert (
        stamps.index == pd.to_datetime([1767571200, 1767571260, 1767571260, 1767571320], unit="s")
    ).all()
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith(f"{path}: 1 row repeats an earlier timestamp")
    assert "'1767571260' on data row 3, the instant of data row 2" in notes[0]


def test_appended_exports_are_merged_with_one_note(tmp_path: Path) -> None:
    stamps = pd.date_range("2026-01-05", periods=50, freq="min").strftime("%Y-%m-%dT%H:%M:%SZ")
    first = "".join(f"{t},{k}\n" for k, t in enumerate(stamps))
    second = "".join(f"{t},{k + 0.01}\n" for k, t in enumerate(stamps))
    frame, got, notes = read_noting(csv(tmp_path, "timestamp,v\n" + first + second))
    assert len(frame) == 50
    np.testing.assert_allclose(frame["v"], np.arange(50) + 0.01)  # the later export wins
    assert got.tolist() == [t for t in stamps for _ in range(2)]
    assert len(notes) == 1
    assert "50 rows repeat" in notes[0]
    assert "'2026-01-05T00:00:00Z' on data row 51, the instant of data row 1" in notes[0]


def test_merging_keeps_the_last_non_empty_value_of_each_signal(tmp_path: Path) -> None:
    text = "timestamp,a,b\n1767571200,1,10\n1767571200,2,\n1767571200,,\n1767571260,5,\n"
    frame, _, _ = read_noting(csv(tmp_path, text))
    assert frame["a"].tolist() == [2.0, 5.0]
    assert frame["b"].tolist()[0] == 10.0
    assert np.isnan(frame["b"].tolist()[1])


def test_the_same_instant_written_twice_is_a_duplicate(tmp_path: Path) -> None:
    text = "timestamp,v\n2026-01-05T00:00:00Z,1\n2026-01-05T01:00:00+01:00,2\n"
    frame, stamps, notes = read_noting(csv(tmp_path, text))
    assert frame["v"].tolist() == [2.0]
    assert stamps.tolist() == ["2026-01-05T00:00:00Z", "2026-01-05T01:00:00+01:00"]
    assert "'2026-01-05T01:00:00+01:00' on data row 2, the instant of data row 1" in notes[0]


def test_no_note_without_duplicates(tmp_path: Path) -> None:
    _, _, notes = read_noting(csv(tmp_path, "timestamp,v\n1767571200,1\n1767571260,2\n"))
    assert notes == []


def test_duplicates_are_logged_by_default(tmp_path: Path, caplog) -> None:
    path = csv(tmp_path, "timestamp,v\n1767571200,1\n1767571200,2\n")
    with caplog.at_level("WARNING", logger="detector.evaluation.csvio"):
        read_series_csv(path)
    assert "1 row repeats" in caplog.text


def test_merged_rows_each_get_their_instant_scores(tmp_path: Path) -> None:
    text = "timestamp,v\n1767571260,2\n1767571200,1\n1767571260.0,2.5\n"
    frame, stamps, _ = read_noting(csv(tmp_path, text))
    write_scores_csv(tmp_path / "out.csv", stamps, frame.rename(columns={"v": "v_score"}))
    assert (tmp_path / "out.csv").read_text().splitlines() == [
        "timestamp,v_score",
        "1767571200,1",
        "1767571260,2.5",
        "1767571260.0,2.5",
    ]


# -- values -----------------------------------------------------------------------------------


def test_infinite_values_are_gaps(tmp_path: Path) -> None:
    text = "timestamp,v\n1767571200,inf\n1767571260,-inf\n1767571320,+Inf\n1767571380,1e400\n"
    text += "1767571440,1e308\n"
    frame, _ = read_series_csv(csv(tmp_path, text))
    values = frame["v"].to_numpy()
    assert np.isnan(values[:4]).all()
    assert values[4] == 1e308  # large but finite: a value, for the detector to judge


def test_an_all_empty_column_is_all_gaps(tmp_path: Path) -> None:
    text = "timestamp,v,w\n1767571200,1,\n1767571260,2,\n"
    frame, _ = read_series_csv(csv(tmp_path, text))
    assert frame["v"].tolist() == [1.0, 2.0]
    assert frame["w"].isna().all()
    assert frame["w"].dtype == np.float64
