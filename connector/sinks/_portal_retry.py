"""One Portal API call with bounded retries (private to ``connector.sinks.portal``).

Two layers, as STYLE.md asks for backpressure: ``classify`` turns one response into data or a
typed error (``PortalBackpressureError`` carries the delay the Portal asked for, and nothing here
sleeps); ``Caller.call`` is the caller that decides to wait and retry:

- retried: 429 and 503 (waiting ``Retry-After``, seconds or an HTTP-date, when given), 408 and
  other 5xx, timeouts and dropped or refused connections, with full-jitter exponential backoff
  (``uniform(0, min(backoff_max, backoff_base * 2**(attempt-1)))``); a Retry-After wait gets a
  jitter of up to 10 % (at most 1 s) on top, never less than asked;
- every wait and every request timeout is capped by the deadline: a wait that would pass it is
  not started, and the call fails at once with ``PortalUnavailableError`` saying so;
- not retried: any other 4xx (``PortalRejectedError``, ``PortalAuthError`` for 401/403), with the
  status and the problem's ``type`` only (``problem_type``);
- after ``max_attempts`` the last error is raised (``PortalBackpressureError`` keeps its delay).

A retry sends the very same bytes and headers (idempotency key included), so the Portal
applies a batch once however often it is sent.

Of an RFC 9457 problem only the status and the ``type`` are kept, and the ``type`` only when it
is a short token or a URI ending in one (``problem_type``). ``title`` and ``detail`` are free
text a real Portal may fill with the record it refused (issue 16): they never reach an
exception, so never a log line, the manifest's ``reason`` or the CLI's table. The operator
finds the record by the entity, date and batch the message names, and the rule by the type.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from connector.sinks.exceptions import (
    PortalAuthError,
    PortalBackpressureError,
    PortalRejectedError,
    PortalUnavailableError,
)

__all__ = ["Caller", "Run", "classify", "problem_type_of", "retry_after_seconds"]

log = logging.getLogger("connector.sinks.portal")

_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_TOKEN = re.compile(r"[a-z0-9-]{1,64}")
"""A problem type kept as is: lower-case letters, digits and dashes (``schema-violation``)."""
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_MAX_TYPE_CHARS = 512
_RETRIED_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass
class Run:
    """What the calls of one delivery share: the retry count, and a stop flag once one failed."""

    retries: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds or an HTTP-date; ``None`` if unreadable.

    A date in the past is 0. Fractional seconds are accepted though RFC 9110 allows integers only.
    """
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def classify(response: httpx.Response, what: str, now: dt.datetime) -> dict[str, Any]:
    """The JSON object of a 2xx response; otherwise the typed error for the response."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise PortalUnavailableError(f"{what}: the Portal answered {status} without a JSON object")
        return data
    problem_type = problem_type_of(response)
    phrase = _phrase(status)
    retry_after = retry_after_seconds(response.headers.get("Retry-After"), now)
    if status == 429 or (status == 503 and retry_after is not None):
        asked = f", Retry-After {retry_after:.1f} s" if retry_after is not None else ""
        raise PortalBackpressureError(
            f"{what}: the Portal asked to slow down ({status}{asked})", retry_after=retry_after
        )
    if status >= 500 or status == 408:
        raise PortalUnavailableError(
            f"{what}: the Portal failed ({status} {phrase}, problem type {problem_type})"
        )
    if status in (401, 403):
        raise PortalAuthError(
            f"{what}: the Portal refused the API key ({status} {phrase}, problem type {problem_type}); "
            "check CARECLOUD_PORTAL_API_KEY (sent as X-API-Key) and its access",
            status=status,
            problem_type=problem_type,
        )
    raise PortalRejectedError(
        f"{what}: the Portal refused it ({status} {phrase}, problem type {problem_type})",
        status=status,
        problem_type=problem_type,
    )


def problem_type_of(response: httpx.Response) -> str:
    """The problem's ``type`` reduced to a token that cannot carry a record value.

    A token of ``[a-z0-9-]`` is kept; so is a URI's last path segment when it is one
    (``https://portal.carecloud.example/problems/schema-violation`` -> ``schema-violation``).
    No ``type`` (or RFC 9457's ``about:blank``) is ``about:blank``; anything else, ``unknown``.
    """
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    value = body.get("type") if isinstance(body, dict) else None
    if value is None or value == "about:blank":
        return "about:blank"
    if not isinstance(value, str) or len(value) > _MAX_TYPE_CHARS:
        return "unknown"
    if _TOKEN.fullmatch(value):
        return value
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return "unknown"
    last = parts.path.rsplit("/", 1)[-1]
    if _SCHEME.fullmatch(parts.scheme) and not parts.query and not parts.fragment and _TOKEN.fullmatch(last):
        return last
    return "unknown"


def _phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (from the code, never from the response)."""
    return httpx.codes.get_reason_phrase(status) or "error"


class Caller:
    """Sends one request until it succeeds, fails for good, runs out of attempts or of time."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        max_attempts: int,
        timeout: float,
        backoff_base: float,
        backoff_max: float,
        deadline: dt.datetime | None,
        clock: Callable[[], dt.datetime],
        sleep: Callable[[float], None],
        rng: random.Random,
        observe: Callable[[str, int | None], None] = lambda event, status: None,
    ) -> None:
        self._http = http
        self._observe = observe
        """``("response", status or None)`` per answer or transport failure, ``("retry", ...)``
        per retry: the metrics' API response and retry counts (status codes only, no bodies)."""
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._deadline = deadline
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._rng_lock = threading.Lock()  # random.Random is not documented as thread-safe

    def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        run: Run,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The response's JSON object; raises the typed error once retrying is over."""
        attempt = 0
        while True:
            attempt += 1
            if run.stopped.is_set():
                raise PortalUnavailableError(f"{what}: stopped, another call of this delivery failed")
            timeout = self._request_timeout(what)
            try:
                response = self._http.request(
                    method, path, content=body, headers=headers, params=params, timeout=timeout
                )
            except _RETRIED_TRANSPORT_ERRORS as exc:
                kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
                failure: PortalUnavailableError = PortalUnavailableError(
                    f"{what}: {kind} ({type(exc).__name__})"
                )
                status: int | None = None
                self._observe("response", None)
            else:
                status = response.status_code
                self._observe("response", status)
                try:
                    return classify(response, what, self._clock())
                except PortalUnavailableError as exc:
                    failure = exc
            if attempt >= self._max_attempts:
                raise failure
            delay = self._delay(attempt, failure)
            self._wait(delay, what, failure)
            run.count_retry()
            self._observe("retry", status)
            log.info(
                "portal: retrying %s",
                what,
                extra={
                    "attempt": attempt + 1,
                    "retry_in_s": round(delay, 2),
                    "status": status,
                    "error": type(failure).__name__,
                },
            )

    def _delay(self, attempt: int, failure: PortalUnavailableError) -> float:
        asked = failure.retry_after if isinstance(failure, PortalBackpressureError) else None
        with self._rng_lock:
            if asked is not None:
                return asked + self._rng.uniform(0.0, min(1.0, asked * 0.1))
            return self._rng.uniform(0.0, min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)))

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return (self._deadline - self._clock()).total_seconds()

    def _request_timeout(self, what: str) -> float:
        remaining = self._remaining()
        if remaining is None:
            return self._timeout
        if remaining <= 0:
            raise PortalUnavailableError(f"{what}: the deadline has passed")
        return min(self._timeout, remaining)

    def _wait(self, delay: float, what: str, failure: PortalUnavailableError) -> None:
        remaining = self._remaining()
        if remaining is not None and delay >= remaining:
            raise PortalUnavailableError(
                f"{what}: waiting {delay:.1f} s to retry would pass the deadline "
                f"({max(remaining, 0.0):.1f} s left); last failure: {failure}"
            ) from failure
        self._sleep(delay)
