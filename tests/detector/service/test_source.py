"""Sources: PromQL range queries against a real Prometheus, and CSV files."""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest
from support.requires import need_binary
from support.servers import Series

from detector.core.timeutil import seconds
from detector.service.config import PrometheusSettings, SignalSettings
from detector.service.source import MAX_POINTS, FileSource, PrometheusSource, SourceError, grid

pytestmark = pytest.mark.integration


@pytest.fixture
def end() -> float:
    return float(np.floor(time.time() / 60) * 60) - 600


def test_long_ranges_are_split_into_chunks_prometheus_accepts(prometheus_factory, end):
    step = 5.0
    t = grid(end - 86_400, end, step)
    assert t.size > MAX_POINTS  # one query would be refused
    series = [
        Series("demo_gauge", {"gpu": "0", "job": "x"}, t, np.sin(t / 3600.0)),
        Series("demo_gauge", {"gpu": "1", "job": "x"}, t, np.cos(t / 3600.0)),
    ]
    prom = prometheus_factory(backfill=series)
    source = PrometheusSource(PrometheusSettings(url=prom.url))
    signal = SignalSettings(name="demo", query="demo_gauge", step=step)
    batch = source.fetch(signal, t[0], t[-1])
    assert np.array_equal(seconds(batch.frame.index), t)
    assert batch.labels == {
        '{gpu="0",job="x"}': {"gpu": "0", "job": "x"},
        '{gpu="1",job="x"}': {"gpu": "1", "job": "x"},
    }
    np.testing.assert_allclose(batch.frame['{gpu="1",job="x"}'].to_numpy(), np.cos(t / 3600.0))
    # Each cycle asks only for what is new: a range inside the history returns just that.
    tail = source.fetch(signal, t[-3] + 0.001, t[-1])
    assert np.array_equal(seconds(tail.frame.index), t[-2:])
    with pytest.raises(SourceError, match="query refused"):
        source.fetch(SignalSettings(name="bad", query="sum(", step=60), t[0], t[-1])
    assert (
        source.fetch(SignalSettings(name="none", query="absent_metric"), t[0], t[-1]).labels == {}
    )


def test_nan_and_infinite_samples_become_gaps(prometheus_factory, end):
    t = grid(end - 3600, end, 60)
    values = np.ones(t.size)
    values[[5, 6, 7]] = [np.nan, np.inf, -np.inf]
    prom = prometheus_factory(backfill=[Series("demo_ratio", {}, t, values)])
    source = PrometheusSource(PrometheusSettings(url=prom.url))
    frame = source.fetch(SignalSettings(name="r", query="demo_ratio"), t[0], t[-1]).frame
    col = frame["{}"].to_numpy()
    assert np.isnan(col[[5, 6, 7]]).all() and np.isfinite(np.delete(col, [5, 6, 7])).all()


def test_unreachable_server_is_reported_as_such():
    source = PrometheusSource(PrometheusSettings(url="http://127.0.0.1:9", timeout=1))
    with pytest.raises(SourceError, match="unreachable") as err:
        source.fetch(SignalSettings(name="x", query="up"), 0, 600)
    assert err.value.unreachable


def test_file_source_reads_signals_and_labelled_columns(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(
        'timestamp,rps,mem{gpu="0"},mem{gpu="1"}\n'
        "1970-01-01T00:01:00Z,1,10,20\n1970-01-01T00:02:00Z,2,,21\n1970-01-01T00:03:30Z,3,12,22\n"
    )
    source = FileSource(path)
    mem = source.fetch(SignalSettings(name="mem", query="unused"), 60, 240)
    assert sorted(mem.labels) == ['{gpu="0"}', '{gpu="1"}']
    assert seconds(mem.frame.index).tolist() == [60.0, 120.0, 180.0, 240.0]
    # The latest value at or before each grid point, within one step (as PromQL looks back).
    assert mem.frame['{gpu="1"}'].tolist() == [20.0, 21.0, 21.0, 22.0]
    assert np.isnan(mem.frame['{gpu="0"}'].iloc[1])
    assert source.fetch(SignalSettings(name="other", query="x"), 60, 240).labels == {}


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_unless_turned_off(prometheus_factory, tmp_path, end, monkeypatch):
    need_binary(shutil.which("openssl") or "/usr/bin/openssl", "apt-get install openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    t = grid(end - 3600, end, 60)
    prom = prometheus_factory(
        backfill=[Series("demo_ratio", {}, t, np.ones(t.size))],
        web_config={"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}},
    )
    assert prom.url.startswith("https://")
    signal = SignalSettings(name="r", query="demo_ratio")
    with pytest.raises(SourceError, match="SSLError"):
        PrometheusSource(PrometheusSettings(url=prom.url)).fetch(signal, t[0], t[-1])
    unverified = PrometheusSource(PrometheusSettings(url=prom.url, tls_verify=False))
    assert unverified.fetch(signal, t[0], t[-1]).frame.shape == (t.size, 1)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # a private CA, trusted explicitly
    trusted = PrometheusSource(PrometheusSettings(url=prom.url))
    assert trusted.fetch(signal, t[0], t[-1]).frame.shape == (t.size, 1)


def test_basic_auth_against_victoria_metrics(vm_factory, end):
    t = grid(end - 3600, end, 60)
    vm = vm_factory(
        series=[Series("demo_ratio", {}, t, np.ones(t.size))],
        extra_args=["-httpAuth.username=watcher", "-httpAuth.password=pa55"],
    )
    signal = SignalSettings(name="r", query="demo_ratio")
    with pytest.raises(SourceError, match="401"):
        PrometheusSource(PrometheusSettings(url=vm.url)).fetch(signal, t[0], t[-1])
    wrong = PrometheusSettings(url=vm.url, username="watcher", password="nope")
    with pytest.raises(SourceError, match="401"):
        PrometheusSource(wrong).fetch(signal, t[0], t[-1])
    good = PrometheusSettings(url=vm.url, username="watcher", password="pa55")
    assert PrometheusSource(good).fetch(signal, t[0], t[-1]).frame.shape == (t.size, 1)


def test_bearer_token_is_sent_on_every_query():
    # No server here checks bearer tokens (Prometheus and VictoriaMetrics leave that to a
    # proxy), so this looks at the request the client would send.
    source = PrometheusSource(PrometheusSettings(url="http://127.0.0.1:9", bearer_token="tok"))
    assert source._client.headers == {"Authorization": "Bearer tok"}
