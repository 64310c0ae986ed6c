"""Sources: PromQL range queries against a real Prometheus, and CSV files.

What a real server will not do on demand (answer 503 then 200, send HTML, stall, trickle) comes
from a small scripted HTTP server on loopback.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from support.requires import need_binary
from support.servers import Series

from detector.core.timeutil import seconds
from detector.service.config import PrometheusSettings, SignalSettings
from detector.service.prometheus_client import (
    PrometheusHTTPError,
    PrometheusMalformedAnswer,
    PrometheusTimeout,
    PrometheusUnreachable,
)
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
    with pytest.raises(SourceError, match="SSLError") as err:
        PrometheusSource(PrometheusSettings(url=prom.url)).fetch(signal, t[0], t[-1])
    assert "self-signed certificate" in str(err.value) and prom.url in str(err.value)
    # A certificate that fails verification is not retried: it would fail again.
    assert isinstance(err.value.__cause__, PrometheusUnreachable)
    assert err.value.__cause__.attempts == 1
    unverified = PrometheusSource(PrometheusSettings(url=prom.url, tls_verify=False))
    assert unverified.fetch(signal, t[0], t[-1]).frame.shape == (t.size, 1)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # a private CA, trusted explicitly
    trusted = PrometheusSource(PrometheusSettings(url=prom.url))
    assert trusted.fetch(signal, t[0], t[-1]).frame.shape == (t.size, 1)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"missing\.pem"):  # at start, not at the first query
        PrometheusSource(PrometheusSettings(url=prom.url))


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


# -- a query API that answers as each test scripts it -------------------------------------------
@dataclass
class Reply:
    """One answer: ``body`` None is a one-series matrix for the range asked; ``delay`` comes
    before the headers, ``trickle`` between the body's bytes."""

    status: int = 200
    body: bytes | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    trickle: float = 0.0


@dataclass
class Seen:
    path: str
    params: dict[str, list[str]]
    authorization: str | None
    client_port: int


@dataclass
class ScriptedApi:
    """Answers ``replies`` in turn (the last one for ever after) and keeps what it was sent."""

    url: str
    replies: list[Reply] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)


def _matrix(params: dict[str, list[str]]) -> bytes:
    start, end, step = (float(params[k][0]) for k in ("start", "end", "step"))
    values = [[t, "1"] for t in np.arange(start, end + step / 2, step).tolist()]
    result = [{"metric": {"__name__": "x", "job": "a"}, "values": values}]
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    scripted = ScriptedApi(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so that connection reuse shows

        def do_GET(self) -> None:
            url = urlparse(self.path)
            params = parse_qs(url.query)
            auth = self.headers.get("Authorization")
            scripted.seen.append(Seen(url.path, params, auth, self.client_address[1]))
            reply = scripted.replies.pop(0) if len(scripted.replies) > 1 else scripted.replies[0]
            body = reply.body if reply.body is not None else _matrix(params).encode()
            time.sleep(reply.delay)
            try:  # the client may have given up meanwhile
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for k in range(len(body)) if reply.trickle else [None]:
                    self.wfile.write(body if k is None else body[k : k + 1])
                    self.wfile.flush()
                    time.sleep(reply.trickle)
            except OSError:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    scripted.url = f"http://127.0.0.1:{server.server_address[1]}"
    scripted.replies.append(Reply())
    yield scripted
    server.shutdown()
    server.server_close()


def _error(status: int, error_type: str, error: str) -> Reply:
    body = {"status": "error", "errorType": error_type, "error": error}
    return Reply(status, json.dumps(body).encode())


SIGNAL = SignalSettings(name="sig", query="x", step=60)
NOW = 1_767_225_600.0


def _fail(source: PrometheusSource) -> SourceError:
    with pytest.raises(SourceError) as err:
        source.fetch(SIGNAL, NOW - 600, NOW)
    return err.value


def test_transient_failures_are_retried_on_one_connection(api):
    api.replies[:] = [_error(503, "unavailable", "busy"), Reply(502, b"<html>bad</html>"), Reply()]
    source = PrometheusSource(PrometheusSettings(url=api.url, timeout=2))
    batch = source.fetch(SIGNAL, NOW - 600, NOW)
    assert batch.labels == {'{job="a"}': {"job": "a"}} and batch.frame.shape == (11, 1)
    assert len(api.seen) == 3 and len({s.client_port for s in api.seen}) == 1
    # Whole seconds, as Prometheus' own clients send them.
    assert api.seen[0].path == "/api/v1/query_range"
    assert {k: v[0] for k, v in api.seen[0].params.items() if k != "query"} == {
        "start": "1767225000",
        "end": "1767225600",
        "step": "60",
    }
    source.close()


def test_retries_are_bounded_and_the_last_error_is_reported(api):
    api.replies[:] = [_error(503, "unavailable", "fake outage")]
    source = PrometheusSource(PrometheusSettings(url=api.url, timeout=2))
    started = time.monotonic()
    error = _fail(source)
    assert time.monotonic() - started < 1.0  # pauses of 0.1 and 0.2 s
    assert len(api.seen) == 3 and not error.unreachable
    assert str(error) == (
        f"sig: query refused by {api.url}: HTTP 503 (unavailable: fake outage) after 3 attempts"
    )
    cause = error.__cause__
    assert isinstance(cause, PrometheusHTTPError) and cause.status == 503
    assert (cause.error_type, cause.reason, cause.attempts) == ("unavailable", "fake outage", 3)
    # A proxy's HTML error page gives its status line, not the page.
    api.replies[:] = [Reply(502, b"<html><body>upstream down</body></html>", "text/html")]
    assert str(_fail(source)).endswith("HTTP 502 (Bad Gateway) after 3 attempts")
    source.close()


def test_retries_stay_within_the_timeout(api):
    api.replies[:] = [Reply(503, b"{}", delay=0.3)]
    source = PrometheusSource(PrometheusSettings(url=api.url, timeout=1))
    started = time.monotonic()
    error = _fail(source)
    # Two attempts fit in the second; a third would not have time left to be worth it.
    assert time.monotonic() - started < 1.3 and len(api.seen) == 2
    assert "HTTP 503" in str(error) and "after 2 attempts" in str(error)
    source.close()


def test_a_refused_query_is_not_retried(api):
    parse = 'invalid parameter "query": 1:5: parse error: unclosed left parenthesis'
    api.replies[:] = [_error(400, "bad_data", parse)]
    source = PrometheusSource(PrometheusSettings(url=api.url))
    error = _fail(source)
    assert str(error) == f"sig: query refused by {api.url}: HTTP 400 (bad_data: {parse})"
    assert len(api.seen) == 1 and not error.unreachable
    api.replies[:] = [Reply(401, b"Unauthorized\n", "text/plain; charset=utf-8")]
    assert str(_fail(source)).endswith("HTTP 401 (Unauthorized)")
    source.close()


@pytest.mark.parametrize(
    ("body", "kind", "why"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "text/html", "not JSON but text/html"),
        (b"[1, 2]", "application/json", "a JSON list"),
        (b'{"status": "success"}', "application/json", "no 'data' field"),
        (b'{"status": "success", "data": {}}', "application/json", "no 'result' field"),
    ],
    ids=["html", "list", "no-data", "no-result"],
)
def test_a_malformed_answer_is_typed_and_not_retried(api, body, kind, why):
    api.replies[:] = [Reply(200, body, kind)]
    source = PrometheusSource(PrometheusSettings(url=api.url))
    error = _fail(source)
    assert str(error) == f"sig: malformed answer ({why}) from {api.url}"
    assert isinstance(error.__cause__, PrometheusMalformedAnswer) and not error.unreachable
    assert len(api.seen) == 1
    source.close()


@pytest.mark.parametrize(
    "reply", [Reply(delay=3.0), Reply(trickle=0.05)], ids=["silent", "trickle"]
)
def test_a_slow_answer_times_out_within_the_budget(api, reply):
    api.replies[:] = [reply]
    source = PrometheusSource(PrometheusSettings(url=api.url, timeout=0.5))
    started = time.monotonic()
    error = _fail(source)
    assert time.monotonic() - started < 0.9
    assert str(error) == f"sig: query to {api.url} timed out after 0.5 s"
    assert isinstance(error.__cause__, PrometheusTimeout) and error.unreachable
    source.close()


def test_a_refused_connection_is_retried_then_reported_with_its_errno():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    source = PrometheusSource(PrometheusSettings(url=url, timeout=2))
    error = _fail(source)
    assert re.fullmatch(
        rf"sig: {re.escape(url)} unreachable \(\[Errno \d+\] Connection refused\) after 3 attempts",
        str(error),
    ), error
    assert type(error.__cause__) is PrometheusUnreachable and error.unreachable
    source.close()


def test_credentials_are_sent_with_every_query(api):
    # Prometheus and VictoriaMetrics leave bearer tokens to a proxy: this server checks them.
    bearer = PrometheusSource(PrometheusSettings(url=api.url, bearer_token="tok"))
    bearer.fetch(SIGNAL, NOW - 600, NOW)
    bearer.fetch(SIGNAL, NOW - 600, NOW)
    basic = PrometheusSource(PrometheusSettings(url=api.url, username="u", password="p"))
    basic.fetch(SIGNAL, NOW - 600, NOW)
    assert [s.authorization for s in api.seen] == ["Bearer tok", "Bearer tok", "Basic dTpw"]
    bearer.close()
    basic.close()


def test_one_pool_per_source_and_a_pickled_copy_opens_its_own(api):
    source = PrometheusSource(PrometheusSettings(url=api.url + "/prom/", timeout=3))
    source.fetch(SIGNAL, NOW - 600, NOW)
    source.fetch(SIGNAL, NOW - 600, NOW)
    copy = pickle.loads(pickle.dumps(source))  # as a fit worker receives it
    assert copy.settings == source.settings
    assert copy.fetch(SIGNAL, NOW - 600, NOW).frame.shape == (11, 1)
    first, second, third = api.seen
    assert first.client_port == second.client_port != third.client_port
    assert first.path == "/prom/api/v1/query_range"
    source.close()
    source.close()  # closing twice is harmless
    copy.close()
