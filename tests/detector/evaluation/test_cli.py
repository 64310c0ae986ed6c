"""Tests of the llmwatch command line, run in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.backtest_cli import error_line, nab_rows, run_ok, write_csv, write_text

from llmwatch.cli import main

OUTPUT_COLUMNS = ["timestamp", "anomaly_score", "anomalous", "value_score"]
N_ROWS = 2 * 288 + 30  # a little over two days of 5-minute points: models get fitted


@pytest.fixture(scope="module")
def nab_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("in") / "series.csv", nab_rows(N_ROWS))


@pytest.fixture(scope="module")
def nab_output(nab_input: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("out") / "scores.csv"
    run_ok([str(nab_input), "--out", str(out)])
    return pd.read_csv(out, dtype={"timestamp": str})


def test_backtest_writes_nab_style_output(nab_input: Path, nab_output: pd.DataFrame) -> None:
    source = pd.read_csv(nab_input, dtype={"timestamp": str})
    assert list(nab_output.columns) == OUTPUT_COLUMNS
    assert len(nab_output) == len(source)
    assert nab_output["timestamp"].tolist() == source["timestamp"].tolist()
    scores = nab_output[["anomaly_score", "value_score"]].to_numpy()
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert set(nab_output["anomalous"].unique()) <= {0, 1}
    assert (nab_output["anomaly_score"].iloc[:288] == 0).all()  # a day of warm-up by default
    assert nab_output["anomaly_score"].iloc[-10] > 0.9  # the spike
    assert nab_output["anomaly_score"].iloc[288:-12].median() < 0.5


def test_timestamp_text_is_kept_verbatim(tmp_path: Path) -> None:
    rows = nab_rows(40)
    rows["timestamp"] = pd.date_range("2026-01-05", periods=40, freq="5min").strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    src = write_csv(tmp_path / "iso.csv", rows)
    out = tmp_path / "out.csv"
    run_ok([str(src), "--out", str(out)])
    got = pd.read_csv(out, dtype={"timestamp": str})
    assert got["timestamp"].tolist() == rows["timestamp"].tolist()


def test_multi_signal_gives_one_score_column_per_signal(tmp_path: Path) -> None:
    rows = nab_rows(60).rename(columns={"value": "rps"})
    rows["latency_p95"] = 0.4
    rows["errors"] = 0.0
    src = write_csv(tmp_path / "multi.csv", rows)
    out = tmp_path / "multi_scores.csv"
    run_ok([str(src), "--out", str(out)])
    got = pd.read_csv(out)
    assert list(got.columns) == [
        "timestamp",
        "anomaly_score",
        "anomalous",
        "rps_score",
        "latency_p95_score",
        "errors_score",
    ]
    assert len(got) == 60


def test_out_dir_writes_one_file_per_input(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "first.csv", nab_rows(30, seed=1))
    b = write_csv(tmp_path / "second.csv", nab_rows(45, seed=2))
    out_dir = tmp_path / "results" / "nested"  # created on demand
    run_ok([str(a), str(b), "--out-dir", str(out_dir)])
    assert sorted(p.name for p in out_dir.iterdir()) == ["first.csv", "second.csv"]
    assert len(pd.read_csv(out_dir / "first.csv")) == 30
    assert len(pd.read_csv(out_dir / "second.csv")) == 45
    assert not list(out_dir.glob(".*"))  # no temporary files left behind


def test_out_dir_does_not_overwrite_same_named_inputs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_csv(tmp_path / "a" / "x.csv", nab_rows(30, seed=1))
    b = write_csv(tmp_path / "b" / "x.csv", nab_rows(45, seed=2))
    out_dir = tmp_path / "out"
    rc = main(["backtest", str(a), str(b), "--out-dir", str(out_dir)])
    written = list(out_dir.glob("*.csv")) if out_dir.exists() else []
    # Either refuse (non-zero exit) or keep both results.
    assert rc != 0 or sum(len(pd.read_csv(p)) for p in written) == 75


def test_parallel_jobs_match_serial(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv", nab_rows(330, seed=3))
    b = write_csv(tmp_path / "b.csv", nab_rows(300, seed=4))
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    run_ok([str(a), str(b), "--out-dir", str(serial)])
    run_ok([str(a), str(b), "--out-dir", str(parallel), "--jobs", "2"])
    for name in ("a.csv", "b.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(serial / name), pd.read_csv(parallel / name), check_exact=False
        )


def test_unix_seconds_timestamps(tmp_path: Path, nab_output: pd.DataFrame) -> None:
    rows = nab_rows(N_ROWS)
    since_epoch = pd.to_datetime(rows["timestamp"]) - pd.Timestamp("1970-01-01")
    unix = (since_epoch // pd.Timedelta(seconds=1)).astype(str)
    assert unix.iloc[0] == "1767571200"  # 2026-01-05 00:00:00 UTC
    src = write_csv(tmp_path / "unix.csv", rows.assign(timestamp=unix))
    out = tmp_path / "unix_scores.csv"
    run_ok([str(src), "--out", str(out)])
    got = pd.read_csv(out, dtype={"timestamp": str})
    assert got["timestamp"].tolist() == unix.tolist()
    # The same instants as the ISO file: the same scores.
    np.testing.assert_allclose(got["anomaly_score"], nab_output["anomaly_score"], atol=1e-6)


def test_unsorted_rows_are_handled(tmp_path: Path, nab_output: pd.DataFrame) -> None:
    rows = nab_rows(N_ROWS).sample(frac=1.0, random_state=1)
    src = write_csv(tmp_path / "shuffled.csv", rows)
    out = tmp_path / "shuffled_scores.csv"
    run_ok([str(src), "--out", str(out)])
    got = pd.read_csv(out, dtype={"timestamp": str})
    assert len(got) == N_ROWS
    assert sorted(got["timestamp"]) == sorted(rows["timestamp"])
    # Output rows come in time order, each with the score it has in the sorted file.
    pd.testing.assert_frame_equal(got, nab_output, check_exact=False, atol=1e-6)


GAP = slice(300, 321)  # rows 300..320 have empty value cells


@pytest.fixture(scope="module")
def gap_output(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    rows = nab_rows(N_ROWS).astype({"value": object})
    rows.iloc[GAP, rows.columns.get_loc("value")] = ""
    rows.iloc[400, rows.columns.get_loc("value")] = "NaN"
    folder = tmp_path_factory.mktemp("gaps")
    src = write_csv(folder / "gaps.csv", rows)
    assert src.read_text().splitlines()[301].endswith(",")  # really an empty cell
    out = folder / "gaps_scores.csv"
    run_ok([str(src), "--out", str(out)])
    return pd.read_csv(out)


def test_gaps_are_allowed(gap_output: pd.DataFrame) -> None:
    assert len(gap_output) == N_ROWS
    assert np.isfinite(gap_output[["anomaly_score", "value_score"]].to_numpy()).all()
    assert gap_output["anomaly_score"].iloc[-10] > 0.9  # the spike is still found


def test_a_gap_is_not_an_anomaly(gap_output: pd.DataFrame) -> None:
    around = gap_output.iloc[GAP.start : GAP.stop + 12]
    assert around["value_score"].iloc[: GAP.stop - GAP.start].max() < 0.5
    assert around["anomalous"].sum() == 0


def test_direction_option(tmp_path: Path) -> None:
    rows = nab_rows(N_ROWS)
    rows.loc[N_ROWS - 10, "value"] = -40.0  # a drop instead of a spike
    src = write_csv(tmp_path / "drop.csv", rows)
    up, both = tmp_path / "up.csv", tmp_path / "both.csv"
    run_ok([str(src), "--out", str(up), "--direction", "value=up"])
    run_ok([str(src), "--out", str(both)])
    assert pd.read_csv(up)["value_score"].iloc[-10] < 0.5
    assert pd.read_csv(both)["value_score"].iloc[-10] > 0.9


# -- error paths ----------------------------------------------------------------------------


def test_missing_timestamp_column(tmp_path: Path, capsys) -> None:
    src = write_text(tmp_path / "bad.csv", "time,value\n2026-01-05 00:00:00,1\n")
    assert main(["backtest", str(src), "--out", str(tmp_path / "o.csv")]) != 0
    line = error_line(capsys)
    assert "'timestamp'" in line and "bad.csv" in line
    assert not (tmp_path / "o.csv").exists()


def test_unparseable_value_names_column_and_row(tmp_path: Path, capsys) -> None:
    text = "timestamp,rps,latency\n2026-01-05 00:00:00,1,0.2\n2026-01-05 00:05:00,2,fast\n"
    src = write_text(tmp_path / "bad.csv", text)
    assert main(["backtest", str(src), "--out", str(tmp_path / "o.csv")]) != 0
    line = error_line(capsys)
    assert "'latency'" in line
    assert "row 2" in line
    assert "'fast'" in line


def test_unparseable_timestamp(tmp_path: Path, capsys) -> None:
    text = "timestamp,value\n2026-01-05 00:00:00,1\nyesterday,2\n2026-01-05 00:10:00,3\n"
    src = write_text(tmp_path / "bad.csv", text)
    assert main(["backtest", str(src), "--out", str(tmp_path / "o.csv")]) != 0
    line = error_line(capsys)
    assert "'yesterday'" in line and "row 2" in line


def refused(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Back-test ``src``: exit 1, one error line naming the file, and no output written."""
    out = tmp_path / "o.csv"
    assert main(["backtest", str(src), "--out", str(out), "--refit-every", "12h"]) == 1
    assert not out.exists()
    line = error_line(capsys)
    assert str(src) in line
    return line


def warning_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llmwatch backtest: warning: ")
    return lines[0]


def test_one_duplicated_timestamp_is_scored_once(tmp_path: Path, capsys) -> None:
    rows, k = nab_rows(N_ROWS), 585  # row k, once models exist, is written twice
    later = rows.iloc[[k]].assign(value=80.0)  # a correction that is a spike
    src = write_csv(
        tmp_path / "dup_one.csv", pd.concat([rows.iloc[: k + 1], later, rows.iloc[k + 1 :]])
    )
    out, merged = tmp_path / "out.csv", tmp_path / "merged_out.csv"
    run_ok([str(src), "--out", str(out)])
    line = warning_line(capsys)
    assert str(src) in line and "1 row repeats" in line
    assert (
        f"{rows['timestamp'].iloc[k]!r} on data row {k + 2}, the instant of data row {k + 1}"
        in line
    )
    deduplicated = pd.concat([rows.iloc[:k], later, rows.iloc[k + 1 :]])
    run_ok([str(write_csv(tmp_path / "merged.csv", deduplicated)), "--out", str(merged)])
    got = pd.read_csv(out, dtype={"timestamp": str})
    want = pd.read_csv(merged, dtype={"timestamp": str})
    assert len(got) == N_ROWS + 1  # one output row per input row
    assert got.iloc[k].tolist() == got.iloc[k + 1].tolist()  # same instant, same scores
    assert got["anomaly_score"].iloc[k] > 0.9  # the later row's value was scored
    # Scored as if the later row alone had been there.
    pd.testing.assert_frame_equal(
        got.drop(index=k + 1).reset_index(drop=True), want, check_exact=False, atol=1e-9
    )


def test_appended_exports_are_scored_once_without_a_traceback(tmp_path: Path, capsys) -> None:
    rows = nab_rows(N_ROWS)
    again = rows.assign(value=rows["value"] + 0.01)
    again.loc[N_ROWS - 10, "value"] = again.loc[N_ROWS - 11, "value"]  # the spike corrected
    src = write_csv(tmp_path / "dup_all.csv", pd.concat([rows, again]))
    out, alone = tmp_path / "out.csv", tmp_path / "alone.csv"
    run_ok([str(src), "--out", str(out)])
    line = warning_line(capsys)
    assert f"{N_ROWS} rows repeat" in line
    assert f"on data row {N_ROWS + 1}, the instant of data row 1" in line
    run_ok([str(write_csv(tmp_path / "again.csv", again)), "--out", str(alone)])
    got = pd.read_csv(out, dtype={"timestamp": str})
    want = pd.read_csv(alone, dtype={"timestamp": str})
    assert got["timestamp"].tolist() == [t for t in rows["timestamp"] for _ in range(2)]
    # The later export wins: each input row has the score its instant has in that export alone.
    pd.testing.assert_frame_equal(
        got, want.loc[want.index.repeat(2)].reset_index(drop=True), check_exact=False, atol=1e-9
    )
    assert got["anomaly_score"].iloc[-20:].max() < 0.5  # the first export's spike is gone


@pytest.mark.parametrize(
    ("stamp", "needle"),
    [("inf", "outside"), ("1e20", "outside"), ("-1", "outside"), ("abc", "unparseable")],
)
def test_bad_unix_timestamp_names_file_value_and_row(
    tmp_path: Path, capsys, stamp: str, needle: str
) -> None:
    text = f"timestamp,value\n1767571200,1\n{stamp},2\n1767571320,3\n"
    line = refused(write_text(tmp_path / "stamps.csv", text), tmp_path, capsys)
    assert f"timestamp {stamp!r} on data row 2" in line and needle in line


@pytest.mark.parametrize("stamp", ["1969-12-31 23:59:59", "2200-01-01 00:00:00"])
def test_absurd_iso_timestamp_is_refused(tmp_path: Path, capsys, stamp: str) -> None:
    text = f"timestamp,value\n2026-01-05 00:00:00,1\n2026-01-05 00:05:00,2\n{stamp},3\n"
    line = refused(write_text(tmp_path / "far.csv", text), tmp_path, capsys)
    assert f"{stamp!r} on data row 3 is outside 1970-01-01 to 2200-01-01" in line


def test_infinite_values_are_scored_as_gaps(tmp_path: Path) -> None:
    rows = nab_rows(N_ROWS).astype({"value": object})
    rows.iloc[[100, 350, 351], rows.columns.get_loc("value")] = ["inf", "-inf", "+Inf"]
    src = write_csv(tmp_path / "inf.csv", rows)
    out = tmp_path / "inf_scores.csv"
    run_ok([str(src), "--out", str(out)])
    got = pd.read_csv(out, dtype={"timestamp": str})
    assert got["timestamp"].tolist() == rows["timestamp"].tolist()
    scores = got[["anomaly_score", "value_score"]].to_numpy()
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert got["anomalous"].iloc[350:360].sum() == 0  # a gap, not an anomaly
    assert got["anomaly_score"].iloc[-10] > 0.9  # the spike is still found


def test_an_all_empty_column_scores_zero(tmp_path: Path) -> None:
    rows = nab_rows(N_ROWS).assign(silent="")
    src = write_csv(tmp_path / "silent.csv", rows)
    out = tmp_path / "silent_scores.csv"
    run_ok([str(src), "--out", str(out)])
    got = pd.read_csv(out)
    assert len(got) == N_ROWS
    assert (got["silent_score"] == 0).all()
    assert got["anomaly_score"].iloc[-10] > 0.9  # the other signal is still scored


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "empty"), ("timestamp,value\n", "no data rows"), ("timestamp\n1\n", "no signal")],
)
def test_empty_header_only_and_no_signals(tmp_path: Path, capsys, text: str, needle: str) -> None:
    src = write_text(tmp_path / "bad.csv", text)
    assert main(["backtest", str(src), "--out", str(tmp_path / "o.csv")]) != 0
    assert needle in error_line(capsys)


def test_missing_file(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere.csv"
    assert main(["backtest", str(missing), "--out", str(tmp_path / "o.csv")]) != 0
    line = error_line(capsys)
    assert "nowhere.csv" in line and "no such file" in line


def test_several_inputs_need_out_dir(tmp_path: Path, capsys) -> None:
    a = write_csv(tmp_path / "a.csv", nab_rows(10))
    b = write_csv(tmp_path / "b.csv", nab_rows(10))
    assert main(["backtest", str(a), str(b), "--out", str(tmp_path / "o.csv")]) != 0
    assert "--out-dir" in error_line(capsys)
    assert not (tmp_path / "o.csv").exists()


def test_one_bad_input_writes_nothing(tmp_path: Path, capsys) -> None:
    good = write_csv(tmp_path / "good.csv", nab_rows(10))
    bad = write_text(tmp_path / "bad.csv", "timestamp,value\nsoon,1\n")
    out_dir = tmp_path / "out"
    assert main(["backtest", str(good), str(bad), "--out-dir", str(out_dir)]) != 0
    assert "bad.csv" in error_line(capsys)
    assert not out_dir.exists() or not list(out_dir.iterdir())


def test_not_a_csv(tmp_path: Path, capsys) -> None:
    src = tmp_path / "binary.csv"
    src.write_bytes(b"timestamp,value\n\xff\xfe\x00garbage,\x80\n")
    assert main(["backtest", str(src), "--out", str(tmp_path / "o.csv")]) != 0
    error_line(capsys)


@pytest.mark.parametrize(
    "extra",
    [["--direction", "value=sideways"], ["--direction", "novalue"], ["--refit-every", "soon"]],
)
def test_bad_options_are_usage_errors(tmp_path: Path, capsys, extra: list[str]) -> None:
    src = write_csv(tmp_path / "a.csv", nab_rows(10))
    with pytest.raises(SystemExit) as exc:
        main(["backtest", str(src), "--out", str(tmp_path / "o.csv"), *extra])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_out_or_out_dir_is_required(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "a.csv", nab_rows(10))
    with pytest.raises(SystemExit) as exc:
        main(["backtest", str(src)])
    assert exc.value.code == 2
