"""Fuzz the ingest's handling of one message for minutes or hours (issue 16, item 4).

    .venv/bin/python bench/fuzz.py [--seconds 300] [--seed 1] [--iterations N] [--minimize 10]
    .venv/bin/python bench/fuzz.py --replay SEED:ITERATION     # one message again, over empty stores

Mutates realistic seeds (Debezium JSON with and without the schema wrapper, Schema-Registry
Avro through a local registry, the native envelope, keys and ``__debezium.*`` headers, the
poison set) and runs each message through ``IngestService.handle_message`` with the compiled
fast path on and off (``connector.devtools.fuzz``). Prints progress every ``--every``
seconds, then the figures: messages, the same-run baseline (the median CPU of the unmutated
seeds), the median and worst per-message CPU per path and how many messages cost more than
the 50 ms target, how the messages ended, the slowest five with their mutation chains, and
every finding (an exception that escaped the barrier, an ``internal_error`` dead letter, the
two paths disagreeing, a message over 50 ms) with what rebuilds it: the seed and iteration,
the chain, and the shortest chain that still breaks the invariant over empty stores. Messages
are named by a short hash, never printed. The target lives in ``docs/benchmarks.md``; the exit
status is 1 when an invariant broke (slow messages are counted, not failed); the last line
printed is a JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from connector.devtools.fuzz import PATHS, TARGET_MS, Fuzzer, Report, format_report, message_digest


def _progress(report: Report) -> None:
    broken = len(report.broken)
    print(
        f"  {report.seconds:6.0f} s  {report.messages:>9,} messages  worst "
        + "  ".join(f"{p} {report.worst_ms(p):.1f} ms" for p in PATHS)
        + f"  findings {broken}, over {TARGET_MS:.0f} ms {sum(report.over_target.values())}",
        flush=True,
    )


def _replay(fuzzer: Fuzzer, spec: str) -> int:
    seed, _, iteration = spec.partition(":")
    source, chain, message = fuzzer.message(int(seed), int(iteration))
    outcomes, broken = fuzzer.check(message)
    names = " > ".join(n for n, _ in chain) or "(none)"
    print(f"seed {seed} iteration {iteration} [{source.name}] chain {names}")
    print(f"  {message.size:,} bytes, sha256 {message_digest(message)}, topic {message.topic}")
    for path, outcome in outcomes.items():
        print(f"  fast {path}: {outcome.summary()} ({outcome.cpu_s * 1e3:.2f} ms)")
        for line in (*outcome.trace, *([f"invalid: {outcome.invalid}"] if outcome.invalid else [])):
            print(f"      {line}")
    print(f"  invariant broken over empty stores: {broken or 'none'}")
    return 1 if broken else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--iterations", type=int, default=None, help="stop after this many instead")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=int, default=8, help="synthetic families behind the seeds")
    parser.add_argument("--minimize", type=int, default=10, help="findings to minimize (0: none)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--replay", metavar="SEED:ITERATION", help="run one message again and stop")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    with Fuzzer(scale=args.scale) as fuzzer:
        if args.replay:
            return _replay(fuzzer, args.replay)
        print(f"{len(fuzzer.corpus.all())} seeds; fuzzing with seed {args.seed}", flush=True)
        seconds = None if args.iterations is not None else args.seconds
        report = fuzzer.run(
            seed=args.seed,
            iterations=args.iterations,
            seconds=seconds,
            progress=_progress,
            every_s=args.every,
        )
        for finding in report.findings[: args.minimize]:
            fuzzer.minimize(finding)
    print()
    print(format_report(report))
    print(
        json.dumps(
            {
                "seed": report.seed,
                "messages": report.messages,
                "seconds": round(report.seconds, 1),
                "broken": len(report.broken),
                "fuzzer_errors": len(report.builder_errors),
                **{f"baseline_us_{p}": round(report.baseline[p] * 1e6, 2) for p in PATHS},
                **{f"median_us_{p}": round(report.median_ms(p) * 1e3, 2) for p in PATHS},
                **{f"worst_ms_{p}": round(report.worst_ms(p), 2) for p in PATHS},
                **{f"over_{TARGET_MS:.0f}ms_{p}": report.over_target[p] for p in PATHS},
            }
        )
    )
    return 1 if report.broken or report.builder_errors else 0


if __name__ == "__main__":
    sys.exit(main())
