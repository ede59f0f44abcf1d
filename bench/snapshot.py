"""Snapshot throughput and memory: state topic → cut → checks → gzip CSV files on an S3 server.

    .venv/bin/python bench/snapshot.py [--sizes 250000,1000000] [--level 6] [--levels 1,6]
        [--api-records 100000] [--api-rate 20] [--pin | --no-pin] [--source-columns]

Starts the project's Kafka broker and an S3-compatible server (moto, over HTTP), and for each
size seeds a 3-partition state topic with that many live entities in a realistic mix (10 %
Family, 0.1 % Provider, 20 % FamilyMember, 20 % Care, 30 % Claim, the rest EOP, every
association resolving), then runs the real ``SnapshotRun`` in a child process (so its peak RSS
is its own) and times it end to end: read up to the cut, the orphan and count checks, CSV
formatting, gzip and multipart upload, manifest. The same-run baseline is the raw rate of
gzip-writing the very same CSV bytes at the same level on one core (``zlib.compressobj`` over
4 MiB chunks): ``ratio = records_per_s / gzip_records_per_s``. ``--levels`` repeats the largest
size at other compression levels, for choosing the default. The last line printed is one JSON
object; targets are in ``docs/benchmarks.md``.

The API route (``--api-records N --api-rate R``): N Family records through ``SnapshotRun``'s
Portal route to the Portal simulator (a subprocess limited to R requests/s, so at most R * 1000
records/s in 1000-record batches). With ``--pin`` (the default where at least two CPUs are
available) the simulator is pinned to one CPU and the client (the child process running the
``SnapshotRun``) to another, with ``sched_setaffinity``, so neither takes the other's core; the
Kafka broker and this script stay unpinned. It reports records/s, the share of the limit, the
duplicate batches the simulator applied (``duplicate_applications`` on ``/_sim/stats``; target
0), and the CPU (user + sys) per record of each side: the client's over its Portal deliveries
(``getrusage`` of its own process, first delivery's start to last delivery's end), the
simulator's from ``/proc/<pid>/stat`` over the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connector.devtools.kafka import KafkaBroker, fetch_jars
from connector.devtools.s3_server import S3Server
from connector.mapping.source_columns import SourceColumns
from connector.model import REFERENCES, raw_schema, samples
from connector.sinks.s3 import S3Storage
from connector.snapshot.cut import take_cut
from connector.snapshot.lag import Lag
from connector.snapshot.run import RunConfig, SnapshotRun
from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.resolve import StateRow

PARTITIONS = 3
SOURCE_COLUMNS = False
"""``--source-columns``: each seeded row keeps its source columns too (``"src"``, as ingest
writes it by default: docs/decisions/0025), so the cut reads rows of their real size."""
DAY = dt.date(2026, 11, 25)
API_KEY = "bench-key"
MIX = {"Family": 0.10, "Provider": 0.001, "FamilyMember": 0.20, "Care": 0.20, "Claim": 0.30}


def _counts(total: int, families_only: bool = False) -> dict[str, int]:
    if families_only:
        return {"Family": total, "Provider": 0, "FamilyMember": 0, "Care": 0, "Claim": 0, "EOP": 0}
    counts = {entity: max(1, int(total * share)) for entity, share in MIX.items()}
    counts["EOP"] = total - sum(counts.values())
    return counts


def _rows(total: int, families_only: bool = False) -> Iterator[tuple[bytes, bytes]]:
    """Every entity with its associations pointing at existing parents (no orphans)."""
    n = _counts(total, families_only)
    refs = {
        "Family": lambda i: {},
        "Provider": lambda i: {},
        "FamilyMember": lambda i: {"FamilyId": f"FAM-{i % n['Family']:09d}"},
        "Care": lambda i: {
            "FamilyMemberId": f"MEM-{i % n['FamilyMember']:09d}",
            "ProviderId": f"PRV-{i % n['Provider']:09d}",
        },
        "Claim": lambda i: {
            "CareId": f"CAR-{i % n['Care']:09d}",
            "ProviderId": f"PRV-{i % n['Provider']:09d}",
        },
        "EOP": lambda i: {"ClaimId": f"CLM-{i % n['Claim']:09d}"},
    }
    prefix = {
        "Family": "FAM",
        "Provider": "PRV",
        "FamilyMember": "MEM",
        "Care": "CAR",
        "Claim": "CLM",
        "EOP": "EOP",
    }
    version = Version(1, 1, 0, 0, 0)
    rng = random.Random(7)
    words = [
        "".join(rng.choice("abcdefghijklmnoprstuvwy") for _ in range(rng.randint(3, 9))) for _ in range(5000)
    ]
    for entity, count in n.items():
        base = samples.sample(entity)
        vary = _varying(entity)
        for i in range(count):
            entity_id = f"{prefix[entity]}-{i:09d}"
            values = {**base, "EntityId": entity_id, **refs[entity](i)}
            for name, kind in vary:  # realistic entropy, so gzip works as hard as on real data
                if values.get(name) is None:
                    continue
                if kind == "string":
                    values[name] = f"{rng.choice(words).title()} {rng.choice(words).title()}"
                elif kind == "decimal":
                    values[name] = Decimal(rng.randint(0, 2_000_000)).scaleb(-2)
                elif kind == "date":
                    values[name] = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 2500))
                elif kind == "timestamp-millis":
                    values[name] = base[name] + dt.timedelta(milliseconds=rng.randint(0, 10**10))
            source = None
            if SOURCE_COLUMNS:  # the source row the values came from: its columns, same values
                source = SourceColumns(f"public.{entity.lower()}", {_column(k): v for k, v in values.items()})
            yield state_key(entity, entity_id), encode_row(StateRow(version, False, values, source=source))


def _column(field: str) -> str:
    """A field's name as a source column's (``FamilyName`` -> ``family_name``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", field).lower()


def _varying(entity: str) -> list[tuple[str, str]]:
    """Fields to randomise: strings (not ids or associations), money, dates, timestamps."""
    skip = {"EntityId"} | {ref.field for ref in REFERENCES[entity]}
    out = []
    for field in raw_schema(entity)["fields"]:
        kind = field["type"]
        kind = next(t for t in kind if t != "null") if isinstance(kind, list) else kind
        kind = (kind.get("logicalType") or kind.get("type")) if isinstance(kind, dict) else kind
        if field["name"] not in skip and kind in ("string", "decimal", "date", "timestamp-millis"):
            out.append((field["name"], kind))
    return out


def _seed(base: dict[str, Any], topic: str, total: int, families_only: bool = False) -> float:
    admin = AdminClient(base)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={"cleanup.policy": "compact"})])[topic].result(
        30
    )
    producer = Producer({**base, "linger.ms": 50, "batch.size": 1_000_000, "compression.type": "lz4"})
    started = time.monotonic()
    for key, value in _rows(total, families_only):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    return time.monotonic() - started


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field))
    return int(line.split()[1]) / 1024


def _child(args: argparse.Namespace) -> None:
    """One snapshot run; prints its timings and peak RSS as JSON."""
    base = {"bootstrap.servers": args.bootstrap}
    storage = S3Storage(
        args.bucket,
        region="us-east-1",
        endpoint_url=args.endpoint,
        access_key_id="bench",
        secret_access_key="bench",
    )
    run = SnapshotRun(
        RunConfig(
            state_topic=args.topic, prefix=args.prefix, gzip_level=args.level, work_dir=Path(args.work)
        ),
        base,
        storage,
        take_cut=lambda day: (take_cut(base, args.topic), Lag()),
    )
    samples: list[tuple[float, float]] = []
    sampling = threading.Event()

    def sample_rss() -> None:  # VmRSS every 20 ms, to tell which phase holds the peak
        while not sampling.wait(0.02):
            samples.append((time.monotonic(), _status_mb("VmRSS:")))

    earlier = []
    for back in range(args.days - 1, 0, -1):  # earlier dates first: the measured run compares
        started = time.monotonic()  # its delivered sets with their digests, as every daily run does
        run.run(DAY - dt.timedelta(days=back))
        earlier.append(round(time.monotonic() - started, 2))
    threading.Thread(target=sample_rss, daemon=True).start()
    started = time.monotonic()
    result = run.run(DAY)
    seconds = time.monotonic() - started
    sampling.set()
    assert result.manifest is not None
    by_phase, edge = {}, started
    for phase, spent in result.phases.items():  # the phases run one after the other, in this order
        inside = [rss for at, rss in samples if edge <= at < edge + spent]
        by_phase[phase] = round(max(inside, default=0.0))
        edge += spent
    files = {
        r.entity: {"key": r.key, "records": r.records, "bytes": r.bytes} for r in result.manifest.entities
    }
    peak = _status_mb("VmHWM:")  # this address space's peak; ru_maxrss survives exec and can
    # report the parent's size at fork (after seeding millions of rows it did: 708 MB)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "phases": result.phases,
                "files": files,
                "peak_rss_mb": peak,
                "rss_by_phase": by_phase,
                "earlier_runs_s": earlier,
                "changes": {r.entity: r.changes for r in result.manifest.entities},
            }
        )
    )


def _cpu_s() -> float:
    """This process's CPU seconds so far, user + sys, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _PortalRoute:
    """The Portal route as the service builds it (``PortalRoute``), pointed at the simulator.

    Keeps this process's CPU seconds at the first delivery's start and the last one's end, so
    the client's CPU over its deliveries is ``cpu_end - cpu_start`` (never counted twice)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cpu_start: float | None = None
        self.cpu_end = 0.0

    def deliver(self, entity: str, day: dt.date, records: Any, count: int, *, snapshot_id: str) -> Any:
        from connector.sinks.portal import PortalClient

        if self.cpu_start is None:
            self.cpu_start = _cpu_s()
        try:
            with PortalClient(self.url, API_KEY, max_attempts=50) as client:
                return client.deliver(entity, day, records, count, snapshot_id=snapshot_id)
        finally:
            self.cpu_end = _cpu_s()


def _api_child(args: argparse.Namespace) -> None:
    """One snapshot run with every entity on the API route; prints the deliver phase's time."""
    from connector.sinks.local import LocalStorage

    base = {"bootstrap.servers": args.bootstrap}
    route = _PortalRoute(args.endpoint)
    run = SnapshotRun(
        RunConfig(state_topic=args.topic, file_threshold=10**9, work_dir=Path(args.work)),
        base,
        LocalStorage(Path(args.work) / "api-run"),
        take_cut=lambda day: (take_cut(base, args.topic), Lag()),
        api=route,
    )
    started = _cpu_s()
    result = run.run(DAY)
    run_cpu_s = _cpu_s() - started
    assert result.manifest is not None
    records = sum(r.records for r in result.manifest.entities if r.status == "delivered")
    print(
        json.dumps(
            {
                "deliver_s": result.phases["deliver"],
                "records": records,
                "deliver_cpu_s": route.cpu_end - (route.cpu_start or route.cpu_end),
                "run_cpu_s": run_cpu_s,
                "cpus": sorted(os.sched_getaffinity(0)),
            }
        )
    )


def _pin_plan(pin: bool | None) -> tuple[int | None, int | None, str]:
    """The simulator's CPU, the client's CPU (``None``: unpinned) and a line that says so."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin is False:
        return None, None, f"unpinned (--no-pin): simulator and client share CPUs {cpus}"
    if len(cpus) < 2:
        return None, None, f"unpinned: only CPU {cpus} is available, simulator and client share it"
    return cpus[-2], cpus[-1], f"simulator pinned to CPU {cpus[-2]}, client to CPU {cpus[-1]}"


def _on_cpu(cpu: int | None) -> Any:
    """A ``preexec_fn`` pinning the child to ``cpu`` (inherited by its threads), or ``None``."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _proc_cpu_s(pid: int) -> float:
    """Another process's CPU seconds so far, user + sys of every thread (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _measure_api(
    broker: KafkaBroker, work: Path, records: int, rate: float, pin: bool | None
) -> dict[str, Any]:
    """API records/s at the simulator's rate limit, the share of what the limit allows, the
    duplicate batches the simulator applied and each side's CPU per record."""
    import httpx

    base = broker.client_config()
    topic = f"bench.snapshot.api-{os.getpid()}"
    _seed(base, topic, records, families_only=True)
    sim_cpu, client_cpu, pinning = _pin_plan(pin)
    print(f"  API route: {pinning}", flush=True)
    sim = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "simulate-portal", "--port", "0", "--api-key", API_KEY,
         "--rate-limit", str(rate)],
        stdout=subprocess.PIPE, text=True, preexec_fn=_on_cpu(sim_cpu),
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        url = re.search(r"http://[^\s,]+", sim.stdout.readline()).group(0)  # type: ignore[union-attr]
        sim_cpus = sorted(os.sched_getaffinity(sim.pid))
        sim_started_s = _proc_cpu_s(sim.pid)  # after its start-up: only serving the run is counted
        child = subprocess.run(
            [sys.executable, __file__, "_api_child", "--bootstrap", broker.bootstrap, "--endpoint", url,
             "--bucket", "-", "--topic", topic, "--prefix", "-", "--level", "6", "--work", str(work)],
            capture_output=True, text=True, check=False, preexec_fn=_on_cpu(client_cpu),
        )  # fmt: skip
        if child.returncode != 0:
            raise SystemExit(f"API child failed:\n{child.stderr[-4000:]}")
        run = json.loads(child.stdout.strip().splitlines()[-1])
        stats = httpx.get(f"{url}/_sim/stats", headers={"X-API-Key": API_KEY}, timeout=10).json()
        sim_cpu_s = _proc_cpu_s(sim.pid) - sim_started_s
    finally:
        sim.terminate()
        sim.wait(10)
    per_s = run["records"] / run["deliver_s"]
    per_record_us = 1e6 / max(run["records"], 1)
    return {
        "api_records": run["records"],
        "api_rate_limit_per_s": rate,
        "api_limit_records_per_s": round(rate * 1000),
        "api_records_per_s": round(per_s),
        "api_limit_ratio": round(per_s / (rate * 1000), 3),
        "api_duplicate_batches": stats.get("duplicate_applications"),
        "api_applied_batches": stats.get("applied_batches"),
        "api_replays": stats.get("replays"),
        "api_throttled": stats.get("throttled"),
        "api_deliver_s": round(run["deliver_s"], 2),
        "api_pinned": client_cpu is not None,
        "api_simulator_cpus": sim_cpus,
        "api_client_cpus": run["cpus"],
        "api_client_cpu_us_per_record": round(run["deliver_cpu_s"] * per_record_us, 1),
        "api_client_run_cpu_us_per_record": round(run["run_cpu_s"] * per_record_us, 1),
        "api_simulator_cpu_us_per_record": round(sim_cpu_s * per_record_us, 1),
    }


def _gzip_baseline(storage: S3Storage, files: dict[str, Any], level: int) -> tuple[float, int]:
    """Seconds to gzip the same CSV bytes at the same level on one core; total CSV bytes."""
    seconds, raw_bytes = 0.0, 0
    for entry in files.values():
        found = storage.get(entry["key"])
        assert found is not None
        raw = gzip.decompress(found[0])
        raw_bytes += len(raw)
        chunk = 4 * 1024 * 1024
        started = time.monotonic()
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        for i in range(0, len(raw), chunk):
            compressor.compress(raw[i : i + chunk])
        compressor.flush()
        seconds += time.monotonic() - started
    return seconds, raw_bytes


def _measure(
    broker: KafkaBroker, s3: S3Server, work: Path, size: int, level: int, days: int
) -> dict[str, Any]:
    base = broker.client_config()
    tag = f"{size}-l{level}-{os.getpid()}"
    topic, bucket = f"bench.snapshot.{tag}", f"bench-{tag}".lower()
    s3.client().create_bucket(Bucket=bucket)
    seed_s = _seed(base, topic, size)
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "_child",
            "--bootstrap",
            broker.bootstrap,
            "--endpoint",
            s3.endpoint_url,
            "--bucket",
            bucket,
            "--topic",
            topic,
            "--prefix",
            "bench",
            "--level",
            str(level),
            "--work",
            str(work),
            "--days",
            str(days),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},  # as the image sets it (Dockerfile)
    )
    if child.returncode != 0:
        raise SystemExit(f"snapshot child failed:\n{child.stderr[-4000:]}")
    run = json.loads(child.stdout.strip().splitlines()[-1])
    storage = S3Storage(
        bucket,
        region="us-east-1",
        endpoint_url=s3.endpoint_url,
        access_key_id="bench",
        secret_access_key="bench",
    )
    gzip_s, raw_bytes = _gzip_baseline(storage, run["files"], level)
    records = sum(f["records"] for f in run["files"].values())
    stored = sum(f["bytes"] for f in run["files"].values())
    return {
        "records": records,
        "level": level,
        "seconds": round(run["seconds"], 2),
        "records_per_s": round(records / run["seconds"]),
        "gzip_records_per_s": round(records / gzip_s),
        "ratio": round(gzip_s / run["seconds"], 3),
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "peak_rss_mb_by_phase": run["rss_by_phase"],
        "phases_s": {k: round(v, 2) for k, v in run["phases"].items()},
        "csv_bytes": raw_bytes,
        "gzip_bytes": stored,
        "seed_s": round(seed_s, 1),
        "earlier_runs_s": run["earlier_runs_s"],
        "compared": sum(1 for c in run["changes"].values() if c is not None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250000,1000000", help="entity counts, comma-separated")
    parser.add_argument("--level", type=int, default=6, help="gzip level of the main runs")
    parser.add_argument("--levels", default="", help="other levels to run at the largest size, e.g. 1,9")
    parser.add_argument(
        "--days",
        type=int,
        default=2,
        help="dates published per size; the last is measured (from 2 on, it digests and compares "
        "each set with the previous delivery's digest, as every daily run after the first does)",
    )
    parser.add_argument("--api-records", type=int, default=100_000, help="records sent by the API route")
    parser.add_argument("--api-rate", type=float, default=20.0, help="the simulator's requests/s limit")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="API route: simulator and client on separate CPUs (default: on with at least 2 CPUs)",
    )
    parser.add_argument(
        "--source-columns", action="store_true", help='seeded rows keep their source columns ("src")'
    )
    args = parser.parse_args()
    global SOURCE_COLUMNS
    SOURCE_COLUMNS = args.source_columns
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    extra = [int(level) for level in args.levels.split(",") if level]
    fetch_jars()
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    runs = []
    try:
        with KafkaBroker(work / "kafka") as broker, S3Server() as s3:
            for size in sizes:
                runs.append(_measure(broker, s3, work, size, args.level, args.days))
                print(f"  {runs[-1]}", flush=True)
            for level in extra:
                runs.append(_measure(broker, s3, work, sizes[-1], level, args.days))
                print(f"  {runs[-1]}", flush=True)
            api = (
                _measure_api(broker, work, args.api_records, args.api_rate, args.pin)
                if args.api_records
                else {}
            )
            print(f"  {api}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    main_run = next(r for r in reversed(runs) if r["level"] == args.level)
    ten_million_s = 10_000_000 / main_run["records_per_s"]
    print(f"\nsnapshot, gzip level {args.level}, {os.cpu_count()} CPUs, load {load:.1f}")
    for r in runs:
        print(
            f"  {r['records']:>10,} records, level {r['level']}: {r['records_per_s']:>8,}/s "
            f"(gzip alone {r['gzip_records_per_s']:,}/s, ratio {r['ratio']}), "
            f"peak RSS {r['peak_rss_mb']} MB, "
            f"{r['gzip_bytes'] / 1e6:.1f} MB stored, phases {r['phases_s']}, "
            f"{r['compared']} entities compared with the day before (earlier runs {r['earlier_runs_s']} s)"
        )
    print(f"  10M entities extrapolated from the largest run: {ten_million_s / 60:.1f} min")
    if api:
        pinning = (
            f"simulator on CPU {api['api_simulator_cpus']}, client on CPU {api['api_client_cpus']}"
            if api["api_pinned"]
            else f"unpinned (simulator CPUs {api['api_simulator_cpus']}, client {api['api_client_cpus']})"
        )
        limit = f"{api['api_rate_limit_per_s']:g} requests/s * 1000 = {api['api_limit_records_per_s']:,}/s"
        batches = (
            f"{api['api_applied_batches']} applied, {api['api_replays']} replays answered, "
            f"{api['api_throttled']} answered 429"
        )
        client = f"user+sys over its deliveries; {api['api_client_run_cpu_us_per_record']} us whole run"
        print(f"\nAPI route, {api['api_records']:,} Family records, {pinning}")
        for name, value, note in (
            ("records/s", f"{api['api_records_per_s']:,}", f"limit {limit}"),
            ("ratio to the limit", api["api_limit_ratio"], "target >= 0.9"),
            ("duplicate batches", api["api_duplicate_batches"], f"target 0; {batches}"),
            ("client CPU/record", f"{api['api_client_cpu_us_per_record']} us", client),
            ("simulator CPU/record", f"{api['api_simulator_cpu_us_per_record']} us", "user+sys over the run"),
        ):
            print(f"  {name:<21}{value!s:>12}   ({note})")
    summary = {
        **{
            k: main_run[k] for k in ("records", "records_per_s", "gzip_records_per_s", "ratio", "peak_rss_mb")
        },
        **api,
        "runs": runs,
        "extrapolated_10m_s": round(ten_million_s),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_child", "_api_child"):
        child = argparse.ArgumentParser()
        for name in ("bootstrap", "endpoint", "bucket", "topic", "prefix", "work"):
            child.add_argument(f"--{name}", required=True)
        child.add_argument("--level", type=int, required=True)
        child.add_argument("--days", type=int, default=1)
        (_child if sys.argv[1] == "_child" else _api_child)(child.parse_args(sys.argv[2:]))
    else:
        main()
