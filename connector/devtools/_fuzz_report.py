"""What a fuzzing run found and measured, and how ``bench/fuzz.py`` prints it (private).

A finding carries what rebuilds its message (the run's seed and the iteration, the seed
message's name, the mutation chain), the two paths' outcomes and a short hash of the bytes;
never the bytes, nor an exception's text, which may quote them.
"""

from __future__ import annotations

import hashlib
import statistics
import traceback
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from connector.devtools._fuzz_corpus import Message
from connector.ingest.barrier import INTERNAL_REASON

__all__ = [
    "PATHS",
    "TARGET_MS",
    "Broken",
    "Finding",
    "FindingKind",
    "Outcome",
    "Report",
    "digest",
    "format_report",
    "frames",
    "message_digest",
    "normal_rows",
]

TARGET_MS: Final = 50.0
"""Issue 16's bound on the CPU of one message of the allowed size."""
PATHS: tuple[Literal["on"], Literal["off"]] = ("on", "off")
"""The compiled fast path on, and off: the two ingests every message goes through."""
Broken = Literal["escaped", "internal_error", "disagreement", "invalid_row"]
"""The invariant a message broke."""
FindingKind = Broken | Literal["slow"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one path made of one message."""

    reason: str | None
    rows: dict[bytes, bytes | None]
    cpu_s: float
    error: str | None = None
    """An exception that escaped ``handle_message`` (its class), or ``internal_error``'s."""
    trace: tuple[str, ...] = ()
    """Where it was raised: ``file:line function`` frames, never the exception's text."""
    invalid: str | None = None
    """Why a complete row it wrote breaks the entity schema (names the field, not the value)."""

    def summary(self) -> str:
        if self.error is not None and self.reason is None:
            return f"raised {self.error}"
        if self.reason == INTERNAL_REASON:
            return f"dead letter {INTERNAL_REASON} ({self.error or '?'})"
        if self.reason is not None:
            return f"dead letter {self.reason}"
        return (
            f"applied, {len(self.rows)} row(s) {digest(*normal_rows(self.rows))}"
            if self.rows
            else "no change"
        )


@dataclass
class Finding:
    """A broken invariant, with what rebuilds the message: ``Fuzzer.message(seed, iteration)``."""

    kind: FindingKind
    seed: int
    iteration: int
    seed_name: str
    seed_kind: str
    chain: tuple[str, ...]
    digest: str
    size: int
    outcomes: dict[str, str]
    cpu_ms: dict[str, float]
    detail: tuple[str, ...] = ()
    """The frames an exception was raised from, or the schema rule a row broke."""
    count: int = 1
    """Messages of the same signature (kind, seed topic, outcomes): this is the first of them,
    and the only one kept unless ``run(keep=...)`` asks for more."""
    minimized: tuple[str, ...] | None = None
    """The shortest chain that still breaks the invariant over empty stores (None: not tried,
    or it needs the stores the run had built)."""

    @property
    def signature(self) -> tuple[str, ...]:
        """Findings alike: the same kind, seed kind (topic) and outcomes (rows aside)."""
        outcomes = tuple(o.split(", ")[0] for o in self.outcomes.values())
        return (self.kind, self.seed_name.split(" ")[0], *outcomes)

    def describe(self) -> str:
        chain = " > ".join(self.chain) or "(none)"
        lines = [
            f"{self.kind} x{self.count}: seed {self.seed} iteration {self.iteration} "
            f"[{self.seed_name}] chain {chain}, {self.size:,} bytes, sha256 {self.digest}",
            *(f"    {path}: {o} ({self.cpu_ms[path]:.2f} ms)" for path, o in self.outcomes.items()),
        ]
        if self.minimized is not None:
            lines.append(f"    minimal chain over empty stores: {' > '.join(self.minimized) or '(none)'}")
        lines += [f"    {line}" for line in self.detail[-6:]]
        return "\n".join(lines)


@dataclass
class Report:
    """What a run did and found."""

    seed: int
    messages: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    builder_errors: list[str] = field(default_factory=list)
    """Mutations that raised while building a message: bugs in the fuzzer, not the ingest."""
    cpu: dict[str, array[float]] = field(default_factory=lambda: {p: array("d") for p in PATHS})
    baseline: dict[str, float] = field(default_factory=dict)
    """Median CPU of the unmutated seeds, per path (seconds): the same-run baseline."""
    over_target: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATHS, 0))
    slowest: list[tuple[float, str, int, tuple[str, ...], int, str]] = field(default_factory=list)
    """(CPU s, path, iteration, chain, size, outcome): the slowest messages, in no order."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """How the messages ended (the Python path's): how far past the parsers the mutations got."""
    mutations: Counter[str] = field(default_factory=Counter)
    """How often each mutation was drawn."""
    fast_path_taken: int = 0
    """Mutated messages the compiled path mapped (rather than declining to the Python path)."""
    worst_by_kind: dict[str, tuple[float, int]] = field(default_factory=dict)
    """The largest CPU (seconds, either path) per seed kind, and its iteration."""

    def median_ms(self, path: str) -> float:
        return statistics.median(self.cpu[path]) * 1e3 if self.cpu[path] else 0.0

    def worst_ms(self, path: str) -> float:
        return max(self.cpu[path]) * 1e3 if self.cpu[path] else 0.0

    @property
    def broken(self) -> list[Finding]:
        """The findings that break a correctness invariant (the slow ones are listed apart)."""
        return [f for f in self.findings if f.kind != "slow"]


def normal_rows(rows: dict[bytes, bytes | None]) -> list[tuple[bytes, Any]]:
    """State rows comparable across paths: a delete marker's ``dt`` is the wall clock."""
    out: list[tuple[bytes, Any]] = []
    for key, value in sorted(rows.items()):
        if value is not None and b'"dt":' in value:
            doc = orjson.loads(value)
            doc.pop("dt", None)
            out.append((key, doc))
        else:
            out.append((key, value))
    return out


def digest(*parts: Any) -> str:
    """A short hash that tells messages (or rows) apart without showing them."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()[:12]


def message_digest(m: Message) -> str:
    return digest(m.topic, m.key or b"", m.value or b"", *(v or b"" for _, v in m.headers))


def frames(exc: BaseException) -> tuple[str, ...]:
    """Where ``exc`` was raised, frame by frame; its text is left out, as it may quote values."""
    return tuple(
        f"at {Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)
    )


def format_report(report: Report, *, top: int = 5) -> str:
    """The figures and the findings, as ``bench/fuzz.py`` prints them."""
    rate = report.messages / report.seconds if report.seconds else 0.0
    lines = [
        f"seed {report.seed}: {report.messages:,} mutated messages in {report.seconds:.0f} s "
        f"({rate:,.0f}/s), {report.fast_path_taken:,} of them mapped by the compiled path",
        f"  {'path':<10}{'baseline µs':>13}{'median µs':>11}{'worst ms':>10}{'> 50 ms':>9}",
    ]
    for p in PATHS:
        lines.append(
            f"  fast {p:<5}{report.baseline.get(p, 0) * 1e6:13.1f}{report.median_ms(p) * 1e3:11.1f}"
            f"{report.worst_ms(p):10.2f}{report.over_target[p]:9d}"
        )
    outcomes = ", ".join(f"{k} {v:,}" for k, v in report.outcomes.most_common(12))
    lines.append(f"  outcomes: {outcomes}")
    by_kind = ", ".join(
        f"{k} {cpu * 1e3:.2f} ms (#{i})" for k, (cpu, i) in sorted(report.worst_by_kind.items())
    )
    lines.append(f"  worst by seed kind: {by_kind}")
    lines.append(f"  slowest {top}:")
    for cpu, path, i, chain, size, outcome in sorted(report.slowest, reverse=True)[:top]:
        lines.append(
            f"    {cpu * 1e3:8.2f} ms  fast {path:<3} iteration {i:<7} {size:>9,} B  "
            f"{' > '.join(chain) or '(none)'} -> {outcome}"
        )
    over = sum(report.over_target.values())
    lines.append(
        f"  findings: {len(report.broken)} broken invariant(s), "
        f"{over} message-path(s) over {TARGET_MS:.0f} ms"
    )
    lines += [f.describe() for f in report.findings]
    lines += [f"  fuzzer error: {e}" for e in report.builder_errors]
    return "\n".join(lines)
