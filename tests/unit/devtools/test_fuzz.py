"""The structure-aware fuzzer's bounded run in ``make test`` (issue 16, item 4).

A fixed seed and a fixed number of mutated messages (about a minute on two cores), each
through ``IngestService.handle_message`` with the compiled fast path on and off over two
stores that see the same sequence. The invariants are the issue's: every message ends
applied or dead-lettered, no exception escapes the barrier, no dead letter is an
``internal_error``, the two paths agree, and the CPU of one message stays bounded; and one
more, that every complete row written passes the entity schema. ``bench/fuzz.py`` runs the
same fuzzer for minutes or hours, and any seed.

Two findings of the fuzzer's, both in the native envelope's decimals (converted by fastavro
before any length check, quadratic; and a value beyond its field's precision rounded and
applied), are fixed in ``connector/source/native.py``; their tests below keep them fixed.

A failure prints the findings: the iteration that rebuilds the message
(``.venv/bin/python bench/fuzz.py --replay 16:ITERATION``), its mutation chain and outcomes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.devtools.fuzz import (
    MUTATIONS,
    Fuzzer,
    Message,
    Report,
    build,
    format_report,
    message_digest,
    normal_rows,
)

pytestmark = pytest.mark.fastpath

SEED = 16
ITERATIONS = 70_000
CPU_BOUND_MS = 250.0
"""Thread CPU time of one message, not wall clock, so other processes' load does not count,
but frequency scaling and two shared cores still do: the issue's target is 50 ms (which
``bench/fuzz.py`` counts against), and five times that keeps a loaded machine from failing a
run the target would pass, while the costs issue 16 removed (seconds per message) still fail."""


@pytest.fixture(scope="module")
def fuzzer() -> Iterator[Fuzzer]:
    with Fuzzer() as f:
        yield f


@pytest.fixture(scope="module")
def report(fuzzer: Fuzzer) -> Report:
    return fuzzer.run(seed=SEED, iterations=ITERATIONS)


def _broken(report: Report, kind: str, *, native: bool | None = None) -> str:
    found = [f for f in report.findings if f.kind == kind]
    if native is not None:
        found = [f for f in found if (f.seed_kind == "native") == native]
    return "\n".join(f.describe() for f in found)


def test_no_exception_escapes_the_barrier(report: Report) -> None:
    # An escaping exception stops the ingest, and every restart re-reads the same offset.
    assert not _broken(report, "escaped"), _broken(report, "escaped")


def test_no_message_meets_a_bug(report: Report) -> None:
    # The barrier dead-letters a bug as internal_error: the partition moves on, the bug stays.
    assert not _broken(report, "internal_error"), _broken(report, "internal_error")


def test_the_compiled_and_the_python_paths_agree(report: Report) -> None:
    assert not _broken(report, "disagreement"), _broken(report, "disagreement")


def test_every_row_written_passes_the_entity_schema(report: Report) -> None:
    # Mapped records are valid by construction (the converters check each field), and the
    # snapshot sends them to CareCloud as they are.
    assert not _broken(report, "invalid_row", native=False), _broken(report, "invalid_row", native=False)


def test_every_row_a_native_envelope_writes_passes_the_entity_schema(report: Report) -> None:
    assert not _broken(report, "invalid_row", native=True)


def test_the_fuzzer_builds_every_message(report: Report) -> None:
    assert report.builder_errors == []
    assert report.messages == ITERATIONS


def test_the_cpu_of_one_message_is_bounded(report: Report) -> None:
    worst = {kind: cpu * 1e3 for kind, (cpu, _) in report.worst_by_kind.items()}
    assert max(worst.values()) < CPU_BOUND_MS, format_report(report)


def test_the_cpu_of_one_native_envelope_is_bounded(report: Report) -> None:
    cpu, _ = report.worst_by_kind["native"]
    assert cpu * 1e3 < CPU_BOUND_MS


def test_the_mutations_reach_past_the_parsers(report: Report) -> None:
    # A fuzzer whose messages all die at the first parse would test nothing behind it.
    assert set(report.mutations) == set(MUTATIONS)
    assert report.outcomes["applied"] > 0.05 * report.messages, report.outcomes
    assert report.fast_path_taken > 0.05 * report.messages
    assert len(report.outcomes) > 25, report.outcomes  # distinct dead-letter reasons reached


def test_a_message_is_rebuilt_from_its_seed_and_iteration(fuzzer: Fuzzer) -> None:
    first = fuzzer.message(SEED, 1234)
    again = fuzzer.message(SEED, 1234)
    assert (first[0], first[1]) == (again[0], again[1])
    assert message_digest(first[2]) == message_digest(again[2])
    assert message_digest(fuzzer.message(SEED, 1235)[2]) != message_digest(first[2])


def test_every_mutation_applies_to_every_kind_it_names(fuzzer: Fuzzer) -> None:
    for mutation in MUTATIONS.values():
        for kind in mutation.kinds:
            for seed in fuzzer.corpus.seeds[kind][:4]:
                for step_seed in range(3):
                    build(seed, ((mutation.name, step_seed),), fuzzer.corpus)


def test_a_bug_the_barrier_catches_is_a_finding(fuzzer: Fuzzer) -> None:
    # The consumer never reads a topic the mapping lacks; handed one, the ingest meets a
    # KeyError, which the barrier dead-letters as internal_error: the oracle must see it.
    outcomes, broken = fuzzer.check(Message("not.in.the.mapping", b"{}", b"{}"))
    assert broken == "internal_error"
    assert outcomes["on"].error == outcomes["off"].error == "KeyError"


def test_rows_differing_only_in_the_delete_stamp_are_the_same() -> None:
    marker = b'{"v":[1,2,0,0,7],"r":{},"d":1,"dt":%d}'
    assert normal_rows({b"Family/F-1": marker % 1}) == normal_rows({b"Family/F-1": marker % 2})
    other = b'{"v":[1,3,0,0,7],"r":{},"d":1,"dt":1}'
    assert normal_rows({b"Family/F-1": marker % 1}) != normal_rows({b"Family/F-1": other})
