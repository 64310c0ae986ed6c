"""A small client of the Prometheus HTTP query API (``GET /api/v1/query_range``), built on httpx.

It speaks to anything that implements that API (Prometheus, VictoriaMetrics, Thanos, Mimir) and
answers either parsed series or one of these errors, all :class:`PrometheusError`:

- :class:`PrometheusUnreachable`: no answer at all (connection refused, name unknown, reset, TLS
  refused); :class:`PrometheusTimeout`, a kind of it: no complete answer within the time budget;
- :class:`PrometheusHTTPError`: an error status, with Prometheus' own ``errorType`` and ``error``
  when the body has them (a bad query is ``400 bad_data``);
- :class:`PrometheusMalformedAnswer`: a success status whose body is not a query result (an HTML
  page from a proxy, JSON without ``data``, values that are not numbers).

Each message names the server's URL and the reason in a line (for a refused connection the errno
line, ``[Errno 111] Connection refused``), so it can go to a log or to ``/health`` as it is.

Retries (:class:`RetryPolicy`): connection failures, timeouts and 502/503/504 are retried a few
times with a short doubling pause, all within the client's ``timeout``, which bounds the whole
query, retries, pauses and reading the body included: a caller running on a schedule waits at
most that long. Connecting gets a share of what is left, so a lost connection attempt leaves time
for another; a slow answer uses the whole budget and is not repeated. Refusals (4xx, other 5xx),
malformed answers and certificates that fail verification are not retried: the same query would
fail the same way.

One :class:`httpx.Client`, so one connection pool, per :class:`PrometheusClient`: queries reuse
its connections; :meth:`PrometheusClient.close` releases them.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import httpx
import numpy as np

from detector.service.config import PrometheusSettings

__all__ = [
    "PrometheusClient",
    "PrometheusError",
    "PrometheusHTTPError",
    "PrometheusMalformedAnswer",
    "PrometheusTimeout",
    "PrometheusUnreachable",
    "RangeSeries",
    "RetryPolicy",
    "tls_verification",
]

# A retry with less time than this left would most likely end in a timeout that hides the cause.
_MIN_ATTEMPT_S = 0.25


class PrometheusError(Exception):
    """A query failed; ``str()`` says where (the server's URL) and why in one line.

    ``transient`` is true when the same query may work a moment later; ``attempts`` is how many
    were made; ``unreachable`` (per class) is true when the server did not answer at all, so other
    queries to it would fail the same way.
    """

    unreachable: ClassVar[bool] = False

    def __init__(self, url: str, reason: str, *, transient: bool = False) -> None:
        super().__init__(url, reason)
        self.url, self.reason, self.transient = url, reason, transient
        self.attempts = 1

    def __str__(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return self.describe() + tries

    def describe(self) -> str:
        """The failure of one attempt."""
        return f"{self.url}: {self.reason}"


class PrometheusUnreachable(PrometheusError):
    """No answer: the connection failed (refused, reset, name unknown, TLS refused)."""

    unreachable = True

    def describe(self) -> str:
        return f"{self.url} unreachable ({self.reason})"


class PrometheusTimeout(PrometheusUnreachable):
    """No complete answer within the client's time budget."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(url, f"{seconds:g} s", transient=True)
        self.seconds = seconds

    def describe(self) -> str:
        return f"query to {self.url} timed out after {self.reason}"


class PrometheusHTTPError(PrometheusError):
    """An error status; ``error_type`` and ``reason`` are Prometheus' own when the body has them."""

    def __init__(
        self, url: str, status: int, reason: str, *, error_type: str = "", transient: bool = False
    ) -> None:
        super().__init__(url, reason, transient=transient)
        self.status, self.error_type = status, error_type

    def describe(self) -> str:
        kind = f"{self.error_type}: " if self.error_type else ""
        return f"query refused by {self.url}: HTTP {self.status} ({kind}{self.reason})"


class PrometheusMalformedAnswer(PrometheusError):
    """A success status with a body that is not a query result."""

    def describe(self) -> str:
        return f"malformed answer ({self.reason}) from {self.url}"


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, how often and after what pause (see the module's docstring).

    ``attempts`` counts the first; the pause before attempt ``k + 1`` is ``backoff * 2**(k-1)``.
    """

    attempts: int = 3
    backoff: float = 0.1
    statuses: frozenset[int] = frozenset({502, 503, 504})

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        return self.backoff * 2 ** (attempt - 1)


class RangeSeries(NamedTuple):
    """One series of a range query: its labels (``__name__`` included), times and values."""

    labels: dict[str, str]
    times: np.ndarray
    values: np.ndarray


class PrometheusClient:
    """Range queries against one Prometheus-compatible server, over one connection pool.

    Parameters
    ----------
    url :
        The API's base URL (``http(s)://host:port``, with a path prefix if it has one).
    timeout :
        Seconds one query may take in all, retries included.
    verify :
        ``True`` verifies TLS certificates against certifi's CA bundle (as requests did),
        ``False`` turns verification off, an :class:`ssl.SSLContext` (a private CA, see
        :func:`tls_verification`) is used as it is.
    auth, headers :
        Basic-auth credentials; headers sent with every query (a bearer token).
    retry :
        What is retried (:class:`RetryPolicy`).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        verify: bool | ssl.SSLContext = True,
        auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        # Redirects are followed as requests did (a proxy moving the API); httpx drops the
        # credentials when one leads to another host.
        self._http = httpx.Client(
            base_url=self.url, auth=auth, headers=headers, verify=verify, follow_redirects=True
        )

    @classmethod
    def from_settings(
        cls, settings: PrometheusSettings, retry: RetryPolicy | None = None
    ) -> PrometheusClient:
        """A client with the service's settings: URL, timeout, TLS and credentials."""
        headers: dict[str, str] = {}
        if settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
        auth = None
        if settings.username is not None and settings.password is not None:
            auth = (settings.username, settings.password.get_secret_value())
        return cls(
            settings.url,
            timeout=settings.timeout,
            verify=tls_verification(settings.tls_verify),
            auth=auth,
            headers=headers,
            retry=retry,
        )

    def close(self) -> None:
        """Close the pool's connections (again: nothing)."""
        self._http.close()

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """The series of ``query`` at ``start, start + step, ...`` up to ``end`` (unix seconds).

        Series without samples are left out. Raises :class:`PrometheusError`.
        """
        params = {"query": query, "start": _number(start), "end": _number(end)}
        body = self._get("/api/v1/query_range", {**params, "step": _number(step)})
        try:
            return _matrix(body["data"]["result"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise PrometheusMalformedAnswer(self.url, _what(exc)) from None

    def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The JSON body of a successful answer, retried as :attr:`retry` allows."""
        deadline = time.monotonic() + self.timeout
        attempt = 1
        while True:
            try:
                response, body = self._attempt(path, params, deadline, attempt)
                return self._answer(response, body)
            except PrometheusError as exc:
                pause = self.retry.pause(attempt)
                left = deadline - time.monotonic() - pause
                if not exc.transient or attempt >= self.retry.attempts or left < _MIN_ATTEMPT_S:
                    exc.attempts = attempt
                    raise
            time.sleep(pause)
            attempt += 1

    def _attempt(
        self, path: str, params: Mapping[str, str], deadline: float, attempt: int
    ) -> tuple[httpx.Response, bytes]:
        """One request, its body read whole before ``deadline``; raises :class:`PrometheusError`."""
        left = deadline - time.monotonic()
        # Connecting gets a share of the budget, so that a lost connection attempt leaves time
        # for the attempts after it; the answer may take all that is left.
        timeout = httpx.Timeout(left, connect=left / (self.retry.attempts - attempt + 1))
        try:
            with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                body = bytearray()
                # httpx's timeouts bound each read; a server trickling bytes must not outlast
                # the budget, so the deadline is checked as the body arrives.
                for chunk in response.iter_bytes():
                    body += chunk
                    if time.monotonic() > deadline:
                        raise PrometheusTimeout(self.url, self.timeout)
        except httpx.TimeoutException as exc:
            raise PrometheusTimeout(self.url, self.timeout) from exc
        except httpx.TransportError as exc:
            # A certificate that fails verification will fail again: not worth a retry.
            lasting = isinstance(_root(exc), ssl.SSLCertVerificationError)
            raise PrometheusUnreachable(self.url, _reason(exc), transient=not lasting) from exc
        except httpx.DecodingError as exc:
            raise PrometheusMalformedAnswer(self.url, f"undecodable body: {exc}") from exc
        except httpx.TooManyRedirects as exc:
            raise PrometheusUnreachable(self.url, str(exc)) from exc
        return response, bytes(body)

    def _answer(self, response: httpx.Response, body: bytes) -> dict[str, Any]:
        """The decoded body of a success; raises the error the status or the body means."""
        try:
            decoded = json.loads(body)
        except ValueError:  # JSONDecodeError, or bytes that are not text at all
            decoded = None
        if not response.is_success:
            error_type, reason = _refusal(response, body, decoded)
            transient = response.status_code in self.retry.statuses
            raise PrometheusHTTPError(
                self.url, response.status_code, reason, error_type=error_type, transient=transient
            )
        if decoded is None:
            kind = response.headers.get("content-type", "no content type")
            raise PrometheusMalformedAnswer(self.url, f"not JSON but {kind}")
        if not isinstance(decoded, dict):
            raise PrometheusMalformedAnswer(self.url, f"a JSON {type(decoded).__name__}")
        return decoded


def tls_verification(verify: bool) -> ssl.SSLContext | bool:
    """What httpx's ``verify`` gets for ``tls_verify``: off, the default CAs, or a private CA.

    A private CA is named by ``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``), as documented when
    the client was requests; httpx itself reads ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``. Raises
    :class:`ValueError` when the named bundle cannot be loaded.
    """
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not verify or not bundle:
        return verify
    try:
        if os.path.isdir(bundle):
            return ssl.create_default_context(capath=bundle)
        return ssl.create_default_context(cafile=bundle)
    except OSError as exc:  # ssl.SSLError is one: a file that holds no certificate
        raise ValueError(f"CA bundle {bundle}: {exc.strerror or exc}") from None


def _matrix(result: object) -> list[RangeSeries]:
    """The series of a range query's ``result``; raises on a malformed one."""
    if not isinstance(result, list):
        raise TypeError(f"result is a {type(result).__name__}, not a list of series")
    out = []
    for item in result:
        values = item.get("values") or []
        if not values:
            continue
        arr = np.asarray(values, dtype=object)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"values of shape {arr.shape}, not [time, value] pairs")
        times = arr[:, 0].astype(np.float64)
        # Prometheus writes NaN and +Inf/-Inf as strings; float() reads them all.
        numbers = np.array([float(x) for x in arr[:, 1]], dtype=np.float64)
        metric = item.get("metric") or {}
        out.append(RangeSeries({str(k): str(x) for k, x in metric.items()}, times, numbers))
    return out


def _refusal(response: httpx.Response, body: bytes, decoded: object) -> tuple[str, str]:
    """``(errorType, error)`` of an error answer: Prometheus' own, or the best a proxy gave."""
    if isinstance(decoded, dict) and decoded.get("error"):
        return str(decoded.get("errorType") or ""), _line(str(decoded["error"]))
    # A plain-text body says more than the status line (a proxy's reason); an HTML page does not.
    plain = response.headers.get("content-type", "").startswith("text/plain")
    text = _line(body.decode("utf-8", "replace")) if plain else ""
    return "", text or response.reason_phrase or "no reason given"


def _root(exc: BaseException) -> BaseException:
    # httpcore re-raises what the socket raised as a context, not always as a cause.
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return exc


def _reason(exc: httpx.TransportError) -> str:
    """Why a connection failed, in a line: the errno line, or what TLS refused."""
    root = _root(exc)
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"SSLError: certificate verify failed: {root.verify_message}"
    if isinstance(root, ssl.SSLError):
        return f"SSLError: {root.reason or root}"
    return _line(str(exc)) or type(exc).__name__


def _what(exc: Exception) -> str:
    """A malformed answer's defect in a few words."""
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r} field"
    return _line(f"{type(exc).__name__}: {exc}")


def _line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def _number(x: float) -> str:
    # Milliseconds are Prometheus' resolution; whole seconds go as integers, as they always did.
    return f"{x:.3f}".rstrip("0").rstrip(".")
