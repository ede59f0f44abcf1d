"""The Portal simulator's request handling: auth, rate limit, faults, routes (no sockets here).

``PortalApp.handle(method, target, headers, body) -> Reply`` is the whole simulator minus the
HTTP server, so the server (``portal_simulator``) stays a thin adapter. Order per request:

1. ``GET /openapi.yaml`` is served to anyone; every other path needs the API key (401).
2. ``/_sim/...`` is the test and demo control surface (accepted sets, stats, faults, limits).
3. ``/v1/...`` is rate limited (token bucket; 429 with ``Retry-After`` in whole seconds), then
   the first pending fault matching the operation fires (before or after the operation is
   applied), then the operation runs against the ``SessionStore``.
"""

from __future__ import annotations

import email.utils
import hmac
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from connector.devtools._portal_sessions import Problem, SessionStore
from connector.sinks._portal_openapi import openapi_text
from connector.sinks._portal_wire import API_KEY_HEADER, PROBLEM_CONTENT_TYPE, REPLAYED_HEADER

__all__ = ["OPERATIONS", "Fault", "PortalApp", "RateLimiter", "Reply"]

OPERATIONS = ("open_session", "find_sessions", "get_session", "put_batch", "commit")
_ACTIONS = ("error", "drop", "slow", "throttle")


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer: ``drop`` closes the connection without any response."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


@dataclass
class Fault:
    """A fault for the next ``times`` requests of operation ``on`` (and ``sequence``, if given).

    ``action``: ``error`` answers ``status`` (a problem); ``drop`` closes the connection with no
    response; ``slow`` waits ``delay`` seconds; ``throttle`` answers 429 with ``Retry-After``
    ``retry_after`` seconds, written as seconds or (``retry_after_format="date"``) an HTTP-date.
    With ``after_apply`` the operation is applied first, so the client's retry meets an already
    applied batch or commit.
    """

    on: str = "any"
    action: str = "error"
    status: int = 500
    delay: float = 0.0
    after_apply: bool = False
    retry_after: float = 1.0
    retry_after_format: str = "seconds"
    sequence: int | None = None
    times: int = 1

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise ValueError(f"a fault is an object with some of: {', '.join(sorted(names))}")
        fault = cls(**data)
        if fault.on not in (*OPERATIONS, "any") or fault.action not in _ACTIONS:
            raise ValueError(
                f"on: one of {', '.join(OPERATIONS)} or any; action: one of {', '.join(_ACTIONS)}"
            )
        if (
            fault.retry_after_format not in ("seconds", "date")
            or fault.times < 1
            or not 100 <= fault.status <= 599
        ):
            raise ValueError("retry_after_format: seconds or date; times >= 1; status a HTTP status")
        return fault

    def matches(self, operation: str, sequence: int | None) -> bool:
        return self.on in ("any", operation) and (self.sequence is None or self.sequence == sequence)


class RateLimiter:
    """A token bucket of ``per_second`` requests per second, holding up to one second's worth."""

    def __init__(self, per_second: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0:
            raise ValueError("the rate limit must be positive")
        self.per_second = per_second
        self._capacity = max(1.0, per_second)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._at = monotonic()

    def take(self) -> float:
        """0 when the request may go now, else the seconds until a token is free."""
        now = self._monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.per_second


class PortalApp:
    """The simulated Portal; thread-safe (one store lock, one control lock)."""

    def __init__(
        self,
        api_key: str,
        *,
        rate_limit: float | None = None,
        faults: Iterable[Fault] = (),
        store: SessionStore | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key:
            raise ValueError("the simulator needs an API key")
        self._key = api_key.encode()
        self.store = store or SessionStore()
        self._lock = threading.Lock()
        self._limiter = RateLimiter(rate_limit) if rate_limit else None
        self._faults = list(faults)
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._counts = {"requests": 0, "throttled": 0, "faults": 0, "unauthorized": 0}
        self._in_flight = 0  # API requests being answered: a test waits for 0 before it judges a dead client

    def add_faults(self, faults: Iterable[Fault]) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_rate_limit(self, per_second: float | None) -> None:
        with self._lock:
            self._limiter = RateLimiter(per_second) if per_second else None

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request; ``headers`` keyed by lower-case name."""
        url = urlsplit(target)
        path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if path == "/openapi.yaml" and method == "GET":
                return Reply(200, openapi_text().encode(), "application/yaml")
            with self._lock:
                self._counts["requests"] += 1
            if not hmac.compare_digest(headers.get(API_KEY_HEADER.lower(), "").encode(), self._key):
                with self._lock:
                    self._counts["unauthorized"] += 1
                raise Problem(
                    401, "unauthorized", "Unauthorized", f"a valid {API_KEY_HEADER} header is required"
                )
            if path.startswith("/_sim/"):
                return self._control(method, path, query, body)
            with self._lock:
                self._in_flight += 1
            try:
                return self._api(method, path, query, headers, body)
            finally:
                with self._lock:
                    self._in_flight -= 1
        except Problem as problem:
            extra = (("Retry-After", str(problem.retry_after)),) if isinstance(problem, _Throttled) else ()
            return Reply(problem.status, orjson.dumps(problem.body(path)), PROBLEM_CONTENT_TYPE, extra)

    def _api(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes
    ) -> Reply:
        parts = path.strip("/").split("/")
        if parts[:2] != ["v1", "entities"] or len(parts) < 3:
            raise Problem(404, "not-found", "Not found", "no such API path")
        self._throttle()
        entity, rest = parts[2], parts[3:]
        store = self.store
        route: tuple[str, int | None, Callable[[], tuple[int, dict[str, Any], bool]]]
        if rest == ["sessions"] and method == "POST":
            route = ("open_session", None, lambda: (*store.open(entity, body), False))
        elif rest == ["sessions"] and method == "GET":
            route = (
                "find_sessions",
                None,
                lambda: (200, store.find(entity, query.get("snapshot_date")), False),
            )
        elif len(rest) == 2 and rest[0] == "sessions" and method == "GET":
            route = ("get_session", None, lambda: (200, store.get(entity, rest[1]), False))
        elif len(rest) == 4 and rest[0] == "sessions" and rest[2] == "batches" and method == "PUT":
            key = headers.get("idempotency-key")
            sequence = int(rest[3]) if rest[3].isascii() and rest[3].isdigit() else None
            route = (
                "put_batch",
                sequence,
                lambda: (201, *store.put_batch(entity, rest[1], rest[3], key, body)),
            )
        elif len(rest) == 3 and rest[0] == "sessions" and rest[2] == "commit" and method == "POST":
            route = ("commit", None, lambda: (200, store.commit(entity, rest[1], body), False))
        elif rest[:1] == ["sessions"] and len(rest) in (1, 2, 3, 4):
            raise Problem(405, "method-not-allowed", "Method not allowed", f"{method} is not allowed here")
        else:
            raise Problem(
                404,
                "outside-session",
                "Not inside a session",
                "entities are accepted only as batches of an upload session: "
                "POST /v1/entities/{entity}/sessions first",
            )
        operation, sequence, run = route
        fault = self._fault(operation, sequence)
        if fault is not None and not fault.after_apply:
            early = self._fire(fault, path)
            if early is not None:
                return early
        status, data, replayed = run()
        if fault is not None and fault.after_apply:
            late = self._fire(fault, path)
            if late is not None:
                return late
        extra = ((REPLAYED_HEADER, "true"),) if replayed else ()
        if operation == "open_session" and status == 201:
            extra = (("Location", f"{path}/{data['id']}"),)
        return Reply(status, orjson.dumps(data), headers=extra)

    def _throttle(self) -> None:
        with self._lock:
            wait = self._limiter.take() if self._limiter is not None else 0.0
            if wait:
                self._counts["throttled"] += 1
        if wait:
            raise _Throttled(max(1, math.ceil(wait)))

    def _fault(self, operation: str, sequence: int | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(operation, sequence):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    self._counts["faults"] += 1
                    return fault
        return None

    def _fire(self, fault: Fault, path: str) -> Reply | None:
        """The reply the fault forces, or ``None`` to carry on (``slow``, after its wait)."""
        if fault.action == "slow":
            self._sleep(fault.delay)
            return None
        if fault.action == "drop":
            return Reply(0, drop=True)
        if fault.action == "throttle":
            seconds = max(0, math.ceil(fault.retry_after))
            value = (
                email.utils.formatdate(self._wall_clock() + seconds, usegmt=True)
                if fault.retry_after_format == "date"
                else str(seconds)
            )
            problem = Problem(
                429, "rate-limited", "Too many requests", "slow down and retry after Retry-After"
            )
            return Reply(
                429, orjson.dumps(problem.body(path)), PROBLEM_CONTENT_TYPE, (("Retry-After", value),)
            )
        name = "unavailable" if fault.status == 503 else "internal-error"
        problem = Problem(fault.status, name, "Simulated failure", "a fault injected on the simulator")
        return Reply(fault.status, orjson.dumps(problem.body(path)), PROBLEM_CONTENT_TYPE)

    def _control(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> Reply:
        if path == "/_sim/accepted" and method == "GET":
            return _json(self.store.accepted(query.get("entity", ""), query.get("date")))
        if path == "/_sim/stats" and method == "GET":
            with self._lock:
                counts = dict(self._counts, pending_faults=len(self._faults), in_flight=self._in_flight)
            return _json({**counts, **self.store.stats()})
        if path == "/_sim/faults" and method == "POST":
            try:
                data = orjson.loads(body)
                items = data.get("faults", [data]) if isinstance(data, dict) else data
                self.add_faults([Fault.from_json(item) for item in items])
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                raise Problem(400, "bad-request", "Bad fault", str(exc)) from None
            return _json({"pending": len(self._faults)})
        if path == "/_sim/faults" and method == "DELETE":
            self.clear_faults()
            return _json({"pending": 0})
        if path == "/_sim/rate-limit" and method == "PUT":
            try:
                per_second = orjson.loads(body).get("per_second")
                self.set_rate_limit(float(per_second) if per_second is not None else None)
            except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
                raise Problem(
                    400, "bad-request", "Bad rate limit", "{per_second: number > 0 or null}"
                ) from None
            return _json({"per_second": per_second})
        raise Problem(404, "not-found", "Not found", "no such simulator control path")


class _Throttled(Problem):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429, "rate-limited", "Too many requests", "the rate limit was reached; retry after Retry-After"
        )
        self.retry_after = retry_after


def _json(data: Any) -> Reply:
    return Reply(200, orjson.dumps(data))
