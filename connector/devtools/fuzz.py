"""A structure-aware fuzzer of the ingest's handling of one message (issue 16, item 4).

Mutates realistic seeds (``_fuzz_corpus``: Debezium JSON with and without the schema
wrapper, Schema-Registry Avro, the native envelope, keys and ``__debezium.*`` headers, the
poison set) with chains of structural, byte-level and message-level mutations
(``_fuzz_json``, ``_fuzz_wire``), and runs each mutated message through
``IngestService.handle_message`` twice, over two local stores that see the same sequence:
once with the compiled fast path and once without (``offline_ingest``). The invariants:

- every message ends applied (or stale, or a tombstone) or dead-lettered with a reason;
- no exception escapes the per-message barrier (one would stop the ingest on every restart);
- no dead letter is ``internal_error`` (a bug the barrier caught: worth fixing all the same);
- both paths agree: the same reason, or the same state rows (delete stamps aside);
- every complete row a message writes passes the entity schema (``connector.model.validate``):
  the mapper's records are valid by construction, and the snapshot sends them to CareCloud;
- the CPU one message costs stays bounded (``Report.over_target``: above 50 ms).

Deterministic: iteration ``i`` of seed ``s`` draws everything from ``Random(f"{s}:{i}")``,
so ``(seed, iteration)`` rebuilds a message (``Fuzzer.message``), and each mutation of a
chain draws from its own generator, so ``minimize`` can drop steps and keep the rest as they
were. Findings name the seed message, the mutation chain, the outcomes and a short hash of
the bytes, never the bytes: the data is synthetic, but shaped like PHI, and the habit holds.

``bench/fuzz.py`` runs it for minutes or hours; ``tests/unit/devtools/test_fuzz.py`` runs a
bounded number of iterations of a fixed seed in ``make test``.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import cast

from connector.devtools._fuzz_corpus import Corpus, Message, Seed, build_corpus, fuzz_mapping
from connector.devtools._fuzz_draft import Draft, Mutation
from connector.devtools._fuzz_json import JSON_MUTATIONS
from connector.devtools._fuzz_report import (
    PATHS,
    TARGET_MS,
    Broken,
    Finding,
    FindingKind,
    Outcome,
    Report,
    format_report,
    frames,
    message_digest,
    normal_rows,
)
from connector.devtools._fuzz_wire import WIRE_MUTATIONS
from connector.devtools.offline_ingest import OfflineIngest
from connector.devtools.schema_registry import SchemaRegistryServer
from connector.errors import SchemaValidationError
from connector.ingest.barrier import INTERNAL_REASON
from connector.model import validate
from connector.state.codec import decode_row, split_key
from connector.state.ledger import is_reserved

__all__ = [
    "MUTATIONS",
    "PATHS",
    "TARGET_MS",
    "Finding",
    "Fuzzer",
    "Message",
    "Outcome",
    "Report",
    "Seed",
    "build",
    "format_report",
    "invalid_row",
    "message_digest",
    "normal_rows",
    "plan",
]

MUTATIONS: dict[str, Mutation] = {m.name: m for m in (*JSON_MUTATIONS, *WIRE_MUTATIONS)}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mapping.yaml"
Chain = tuple[tuple[str, int], ...]
"""Mutation names, each with the seed of its own random generator."""


def plan(seed: Seed, rng: random.Random) -> Chain:
    """Up to four mutations that apply to ``seed``'s kind, in stage order (none: as it is).

    Half the chains also make the change newer than any stored one: the seeds went into the
    stores first, so without it most changes would end as stale before the merge is reached.
    """
    n = rng.choices(range(5), weights=[1, 6, 4, 2, 1])[0]
    pool = [m for m in MUTATIONS.values() if seed.kind in m.kinds]
    picked = rng.choices(pool, [m.weight for m in pool], k=n)
    newer = MUTATIONS["newer_version"]
    if seed.kind in newer.kinds and rng.random() < 0.5:
        picked.append(newer)
    picked.sort(key=lambda m: m.stage)
    return tuple((m.name, rng.getrandbits(32)) for m in picked)


def invalid_row(rows: dict[bytes, bytes | None]) -> str | None:
    """Why a complete, live row of ``rows`` breaks its entity's schema, or None.

    The mapper's records are valid by construction (its converters enforce each field's type,
    range and scale, so it does not call ``validate`` per event); a row that is not would
    reach CareCloud through the snapshot. The message names the field, never the value.
    """
    for key, value in rows.items():
        if value is None or is_reserved(key):
            continue  # a tombstone, or one of the connector's own records (a ~ key), not an entity
        entity, _ = split_key(key)
        row = decode_row(entity, value)
        if not row.complete:
            continue  # fields still missing (unchanged TOAST): the snapshot waits for them
        try:
            validate(entity, row.values)
        except SchemaValidationError as exc:
            return str(exc)
    return None


def _detail(outcomes: dict[str, Outcome]) -> tuple[str, ...]:
    for o in outcomes.values():
        if o.trace:
            return o.trace
        if o.invalid:
            return (f"invalid: {o.invalid}",)
    return ()


def build(seed: Seed, chain: Chain, corpus: Corpus, iteration: int = 0) -> Message:
    """``seed`` with ``chain`` applied: parts rendered to bytes before the first byte-level step."""
    draft = Draft(seed, corpus, iteration)
    for name, step_seed in chain:
        mutation = MUTATIONS[name]
        if mutation.stage >= 2:
            draft.render()
        mutation.apply(draft, random.Random(step_seed))
    return draft.message()


class Fuzzer:
    """The two ingests, the registry their Avro topics need and the seeds; a context manager."""

    def __init__(
        self,
        mapping: Path = EXAMPLE,
        *,
        scale: int = 8,
        corpus_seed: int = 7,
        max_message_bytes: int = 1_000_000,
        state_row_limit: int = 1_047_564,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="fuzz-")
        self.mapping = Path(self._dir.name) / "mapping.yaml"
        self.mapping.write_text(fuzz_mapping(mapping))
        self.max_message_bytes, self.state_row_limit = max_message_bytes, state_row_limit
        self.registry = SchemaRegistryServer().start()
        self.corpus = build_corpus(mapping, self.registry, scale=scale, seed=corpus_seed)
        self._turn = 0
        self.ingests = self._open()
        # The seeds, schemas and plans live as long as the run: out of the collector's reach,
        # a full collection no longer lands its tens of milliseconds on one message's CPU.
        gc.collect()
        gc.freeze()

    def _open(self) -> dict[str, OfflineIngest]:
        return {
            path: OfflineIngest(
                self.mapping,
                fast_path=path,
                schema_registry_url=self.registry.url,
                max_message_bytes=self.max_message_bytes,
                state_row_limit=self.state_row_limit,
            )
            for path in PATHS
        }

    def reset(self) -> None:
        """Empty stores again: after a disagreement they differ, and would go on differing."""
        for ingest in self.ingests.values():
            ingest.close()
        self.ingests = self._open()

    def close(self) -> None:
        gc.unfreeze()
        for ingest in self.ingests.values():
            ingest.close()
        self.registry.stop()
        self._dir.cleanup()

    def __enter__(self) -> Fuzzer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- one message -------------------------------------------------------------------------

    def handle(self, path: str, m: Message) -> Outcome:
        """One path's outcome; an escaping exception is caught here and becomes the outcome."""
        ingest = self.ingests[path]
        started = time.thread_time()
        try:
            # A header's value may be None, as librdkafka hands a null header; the service takes it.
            headers = cast("list[tuple[str, bytes]]", list(m.headers)) or None
            result = ingest.handle(m.topic, m.key, m.value, headers)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the finding this fuzzer exists for; PanicException included
            return Outcome(None, {}, time.thread_time() - started, type(exc).__name__, frames(exc))
        error = result.error if result.reason == INTERNAL_REASON else None
        return Outcome(result.reason, result.rows, result.cpu_s, error)

    def check(self, m: Message) -> tuple[dict[str, Outcome], Broken | None]:
        """Both paths' outcomes and the invariant broken, if any (the CPU bound apart)."""
        self._turn ^= 1  # each path goes first every other message: the second finds caches warm
        order = PATHS if self._turn else PATHS[::-1]
        ran = {path: self.handle(path, m) for path in order}
        outcomes: dict[str, Outcome] = {path: ran[path] for path in PATHS}
        on, off = outcomes["on"], outcomes["off"]
        if any(o.error is not None and o.reason is None for o in outcomes.values()):
            return outcomes, "escaped"
        if INTERNAL_REASON in (on.reason, off.reason):
            return outcomes, "internal_error"
        if on.reason != off.reason or normal_rows(on.rows) != normal_rows(off.rows):
            return outcomes, "disagreement"
        problem = invalid_row(off.rows)
        if problem is not None:
            outcomes["off"] = dataclasses.replace(off, invalid=problem)
            return outcomes, "invalid_row"
        return outcomes, None

    def message(self, seed: int, iteration: int) -> tuple[Seed, Chain, Message]:
        """The message of ``iteration`` of a run with ``seed``, rebuilt (iteration ``-1-k``:
        seed ``k`` as it is, which every run sends first)."""
        if iteration < 0:
            source = self.corpus.all()[-1 - iteration]
            return source, (), source.message
        rng = random.Random(f"{seed}:{iteration}")
        source = self.corpus.pick(rng)
        chain = plan(source, rng)
        return source, chain, build(source, chain, self.corpus, iteration)

    # -- runs --------------------------------------------------------------------------------

    def run(
        self,
        *,
        seed: int,
        iterations: int | None = None,
        seconds: float | None = None,
        progress: Callable[[Report], None] | None = None,
        every_s: float = 10.0,
        keep: int = 1,
    ) -> Report:
        """Fuzz until ``iterations`` messages or ``seconds`` have passed (whichever first).

        The unmutated seeds go first: they fill both stores (so later changes meet stored
        rows) and give the same-run baseline. ``keep`` findings of each signature are kept.
        """
        report = Report(seed)
        started = time.monotonic()
        base: dict[str, list[float]] = {p: [] for p in PATHS}
        for k, s in enumerate(self.corpus.all()):  # iteration -1-k: seed k as it is
            outcomes = self._judge(report, -1 - k, s, (), s.message, keep, measure=False)
            for p in PATHS:
                base[p].append(outcomes[p].cpu_s)
        report.baseline = {p: statistics.median(base[p]) for p in PATHS}
        next_progress = time.monotonic() + every_s
        i = 0
        while (iterations is None or i < iterations) and (
            seconds is None or time.monotonic() - started < seconds
        ):
            try:
                source, chain, m = self.message(seed, i)
            except Exception as exc:  # a bug of the fuzzer's own: reported, never hidden
                where = ", ".join(frames(exc)[-2:])
                report.builder_errors.append(f"iteration {i}: {type(exc).__name__} {where}")
            else:
                self._judge(report, i, source, chain, m, keep, measure=True)
            i += 1
            if progress is not None and time.monotonic() >= next_progress:
                report.seconds = time.monotonic() - started
                progress(report)
                next_progress = time.monotonic() + every_s
        report.seconds = time.monotonic() - started
        return report

    def _judge(
        self, report: Report, i: int, source: Seed, chain: Chain, m: Message, keep: int, *, measure: bool
    ) -> dict[str, Outcome]:
        """Run one message, record what broke; ``measure``: count it in the figures too."""
        taken = self.ingests["on"].service.counts["fast_path"]
        outcomes, broken = self.check(m)
        names = tuple(name for name, _ in chain)
        worst = max(o.cpu_s for o in outcomes.values())
        if measure:
            self._measure(report, i, source, names, m, outcomes)
            report.fast_path_taken += self.ingests["on"].service.counts["fast_path"] - taken
        kinds: list[FindingKind] = [broken] if broken else []
        if worst * 1e3 > TARGET_MS and measure:
            kinds.append("slow")
        for kind in kinds:
            finding = Finding(
                kind,
                report.seed,
                i,
                source.name,
                source.kind,
                names,
                message_digest(m),
                m.size,
                {p: o.summary() for p, o in outcomes.items()},
                {p: o.cpu_s * 1e3 for p, o in outcomes.items()},
                _detail(outcomes),
            )
            self._record(report, finding, keep)
        if broken in ("escaped", "internal_error", "disagreement"):
            self.reset()  # the two stores may differ now, and would go on differing
        return outcomes

    @staticmethod
    def _measure(
        report: Report, i: int, source: Seed, names: tuple[str, ...], m: Message, outcomes: dict[str, Outcome]
    ) -> None:
        report.messages += 1
        off = outcomes["off"]
        report.outcomes[off.reason or ("applied" if off.rows else "no change")] += 1
        report.mutations.update(names)
        worst = max(o.cpu_s for o in outcomes.values())
        if worst > report.worst_by_kind.get(source.kind, (-1.0, 0))[0]:
            report.worst_by_kind[source.kind] = (worst, i)
        for path, o in outcomes.items():
            report.cpu[path].append(o.cpu_s)
            if o.cpu_s * 1e3 > TARGET_MS:
                report.over_target[path] += 1
            report.slowest.append((o.cpu_s, path, i, names, m.size, o.summary()))
        if len(report.slowest) > 64:
            report.slowest = sorted(report.slowest, reverse=True)[:10]

    @staticmethod
    def _record(report: Report, finding: Finding, keep: int) -> None:
        same = [f for f in report.findings if f.signature == finding.signature]
        if same:
            same[0].count += 1
            if len(same) >= keep:
                return
        report.findings.append(finding)

    def minimize(self, finding: Finding) -> Finding:
        """Drop mutations from the finding's chain while it still breaks the same invariant
        over empty stores; leaves ``minimized`` None when even the whole chain needs the
        stores the run had built (rebuild it with ``run(seed=..., iterations=iteration + 1)``)."""
        source, chain, _ = self.message(finding.seed, finding.iteration)

        def breaks(steps: Chain) -> bool:
            self.reset()
            outcomes, broken = self.check(build(source, steps, self.corpus, finding.iteration))
            if finding.kind == "slow":
                return max(o.cpu_s for o in outcomes.values()) * 1e3 > TARGET_MS
            return broken == finding.kind

        if not breaks(chain):
            return finding
        i = 0
        while i < len(chain):
            shorter = chain[:i] + chain[i + 1 :]
            if breaks(shorter):
                chain = shorter
            else:
                i += 1
        finding.minimized = tuple(name for name, _ in chain)
        self.reset()
        return finding
