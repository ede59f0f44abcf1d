"""``S3Storage`` against a real S3-compatible server (moto, over HTTP), faults over the wire."""

from __future__ import annotations

import hashlib
import random
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.devtools.faulty_http import S3_ACCESS_DENIED, S3_SLOW_DOWN, Fault, FaultyHttpProxy
from connector.devtools.s3_server import S3Endpoint, S3Server
from connector.sinks import PreconditionFailedError, S3Storage, StorageDeniedError, StorageUnavailableError

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB
GZIP = "application/gzip"
REPO = Path(__file__).resolve().parents[2]


def make_storage(endpoint: S3Endpoint, bucket: str, **settings: Any) -> S3Storage:
    defaults: dict[str, Any] = {
        "region": endpoint.region,
        "endpoint_url": endpoint.url,
        "access_key_id": endpoint.access_key_id,
        "secret_access_key": endpoint.secret_access_key,
        "part_size": PART,
    }
    return S3Storage(bucket, **(defaults | settings))


@pytest.fixture
def storage(s3_server: S3Endpoint, s3_bucket: str) -> S3Storage:
    return make_storage(s3_server, s3_bucket)


@pytest.fixture
def proxy(s3_server: S3Endpoint) -> Iterator[FaultyHttpProxy]:
    with FaultyHttpProxy(s3_server.url) as running:
        yield running


def chunked(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def open_uploads(endpoint: S3Endpoint, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    return list(endpoint.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))


# -- put_stream -------------------------------------------------------------------------------
def test_multipart_round_trip(s3_server: S3Endpoint, s3_bucket: str, proxy: FaultyHttpProxy) -> None:
    storage = make_storage(s3_server, s3_bucket, endpoint_url=proxy.url)
    data = random.Random(7).randbytes(3 * PART + 12_345)
    key = "carecloud/2026-03-08/Claim.csv.gz"

    stored = storage.put_stream(key, chunked(data), content_type=GZIP, metadata={"cut": "c-42"})

    sha256 = hashlib.sha256(data).hexdigest()
    assert (stored.key, stored.size, stored.sha256, stored.metadata) == (
        key,
        len(data),
        sha256,
        {"cut": "c-42"},
    )
    assert sum("partNumber=" in line for line in proxy.requests) == 4  # three full parts and the tail
    assert storage.stat(key) == stored
    got = storage.get(key)
    assert got is not None
    assert got[0] == data
    assert got[1] == stored
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentType"] == GZIP
    assert head["Metadata"] == {"cut": "c-42", "sha256": sha256}
    assert storage.list_keys("carecloud/") == [key]
    assert open_uploads(s3_server, s3_bucket) == []


@pytest.mark.parametrize("size", [0, 1, PART - 1])
def test_stream_shorter_than_a_part_is_one_put(
    s3_server: S3Endpoint, s3_bucket: str, proxy: FaultyHttpProxy, size: int
) -> None:
    storage = make_storage(s3_server, s3_bucket, endpoint_url=proxy.url)
    data = b"x" * size

    stored = storage.put_stream("small.csv.gz", chunked(data), content_type=GZIP)

    assert (stored.size, stored.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert [line.split()[0] for line in proxy.requests] == ["PUT", "HEAD"]
    assert storage.stat("small.csv.gz") == stored


def test_parts_are_uploaded_while_the_stream_is_produced(s3_server: S3Endpoint, s3_bucket: str) -> None:
    storage = make_storage(s3_server, s3_bucket)
    client = s3_server.client()
    key = "incremental.csv.gz"
    parts_seen: list[int] = []

    def produce() -> Iterator[bytes]:
        for part in range(4):
            if part >= 2:  # two parts handed over: the first must be on the server by now
                (upload,) = open_uploads(s3_server, s3_bucket, key)
                listed = client.list_parts(Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"])
                parts_seen.append(len(listed.get("Parts", [])))
            yield from chunked(bytes([part]) * PART, MiB)

    stored = storage.put_stream(key, produce(), content_type=GZIP)

    assert stored.size == 4 * PART
    assert parts_seen[0] >= 1
    assert parts_seen[1] >= 2


def test_memory_stays_flat_whatever_the_stream_length(storage: S3Storage) -> None:
    def produce(parts: int) -> Iterator[bytes]:
        for _ in range(parts * 20):
            yield bytes(256 * 1024)  # a fresh object each time, as an encoder's output is

    tracemalloc.start()
    try:
        storage.put_stream("big.csv.gz", produce(10), content_type=GZIP)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 4 * PART, f"{peak / MiB:.1f} MiB held for a 50 MiB stream"  # measured: about 2.4 parts


def test_a_failing_producer_aborts_the_upload(
    s3_server: S3Endpoint, s3_bucket: str, storage: S3Storage
) -> None:
    storage.put_bytes("k.csv.gz", b"previous", content_type=GZIP)

    def produce() -> Iterator[bytes]:
        yield b"a" * (2 * PART)
        raise RuntimeError("encoder broke")

    with pytest.raises(RuntimeError, match="encoder broke"):
        storage.put_stream("k.csv.gz", produce(), content_type=GZIP)

    assert open_uploads(s3_server, s3_bucket) == []
    got = storage.get("k.csv.gz")
    assert got is not None
    assert got[0] == b"previous"


_CRASHING_WRITER = """
import sys, time
from connector.sinks import S3Storage
url, bucket, key = sys.argv[1:]
storage = S3Storage(bucket, region="us-east-1", endpoint_url=url, access_key_id="testing",
                    secret_access_key="testing", part_size=5 * 1024 * 1024)
def produce():
    yield b"a" * (5 * 1024 * 1024)
    yield b"b" * (5 * 1024 * 1024)
    print("two parts handed over", flush=True)
    time.sleep(120)
storage.put_stream(key, produce(), content_type="application/gzip")
"""


def test_a_killed_writer_leaves_only_debris(
    s3_server: S3Endpoint, s3_bucket: str, storage: S3Storage
) -> None:
    prefix, key = "carecloud/2026-03-08/", "carecloud/2026-03-08/Care.csv.gz"
    previous = storage.put_bytes(key, b"yesterday's run", content_type=GZIP)
    writer = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, s3_server.url, s3_bucket, key],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"two parts handed over\n"
        (upload,) = open_uploads(s3_server, s3_bucket, prefix)
        parts = s3_server.client().list_parts(Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"])
        assert parts.get("Parts")
    finally:
        writer.kill()
        writer.wait()

    assert storage.stat(key) == previous
    assert storage.list_keys(prefix) == [key]
    assert storage.abort_incomplete(prefix) == 1
    assert open_uploads(s3_server, s3_bucket) == []
    assert storage.abort_incomplete(prefix) == 0


def test_abort_incomplete_stays_under_its_prefix(
    s3_server: S3Endpoint, s3_bucket: str, storage: S3Storage
) -> None:
    client = s3_server.client()
    for key in ("day-1/A.csv.gz", "day-1/B.csv.gz", "day-2/A.csv.gz"):
        client.create_multipart_upload(Bucket=s3_bucket, Key=key)

    assert storage.abort_incomplete("day-1/") == 2
    assert [u["Key"] for u in open_uploads(s3_server, s3_bucket)] == ["day-2/A.csv.gz"]


# -- conditional writes -----------------------------------------------------------------------
def test_conditional_create(storage: S3Storage) -> None:
    first = storage.put_bytes("_lease.json", b"one", content_type="application/json", if_none_match=True)

    with pytest.raises(PreconditionFailedError, match=r"_lease\.json"):
        storage.put_bytes("_lease.json", b"two", content_type="application/json", if_none_match=True)

    got = storage.get("_lease.json")
    assert got is not None
    assert (got[0], got[1].etag) == (b"one", first.etag)


def test_conditional_replace(storage: S3Storage) -> None:
    first = storage.put_bytes("_run.json", b"one", content_type="application/json")
    second = storage.put_bytes("_run.json", b"two", content_type="application/json", if_match=first.etag)
    assert second.etag != first.etag

    with pytest.raises(PreconditionFailedError):
        storage.put_bytes("_run.json", b"three", content_type="application/json", if_match=first.etag)
    with pytest.raises(PreconditionFailedError, match=r"absent\.json"):
        storage.put_bytes("absent.json", b"x", content_type="application/json", if_match=first.etag)

    got = storage.get("_run.json")
    assert got is not None
    assert got[0] == b"two"
    assert storage.stat("absent.json") is None


# -- reads, listing, delete -------------------------------------------------------------------
def test_reads_of_absent_keys_and_delete(storage: S3Storage) -> None:
    assert storage.get("nope") is None
    assert storage.stat("nope") is None
    storage.delete("nope")

    storage.put_bytes("b/2", b"2", content_type="text/plain", metadata={"cut": "c"})
    storage.put_bytes("b/1", b"1", content_type="text/plain")
    storage.put_bytes("a/1", b"1", content_type="text/plain")
    assert storage.list_keys("b/") == ["b/1", "b/2"]
    stat = storage.stat("b/2")
    assert stat is not None
    assert (stat.size, stat.sha256, stat.metadata) == (1, hashlib.sha256(b"2").hexdigest(), {"cut": "c"})

    storage.delete("b/2")
    assert storage.list_keys("") == ["a/1", "b/1"]


def test_get_refuses_bytes_that_disagree_with_the_stored_sha256(
    s3_server: S3Endpoint, s3_bucket: str, storage: S3Storage
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="k", Body=b"data", Metadata={"sha256": "0" * 64})

    with pytest.raises(StorageUnavailableError, match="sha256"):
        storage.get("k")


# -- server-side encryption -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"encryption": "AES256"}, {"ServerSideEncryption": "AES256"}),
        (
            {"encryption": "aws:kms", "kms_key_id": "alias/snapshots"},
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/snapshots"},
        ),
    ],
)
def test_server_side_encryption(
    s3_server: S3Endpoint, s3_bucket: str, settings: dict[str, str], expected: dict[str, str]
) -> None:
    storage = make_storage(s3_server, s3_bucket, **settings)
    storage.put_bytes("small", b"x", content_type="text/plain")
    storage.put_stream("large", chunked(b"y" * (PART + 1)), content_type=GZIP)

    for key in ("small", "large"):
        head: Any = s3_server.client().head_object(Bucket=s3_bucket, Key=key)
        assert {name: head.get(name) for name in expected} == expected


# -- faults over the wire ---------------------------------------------------------------------
@pytest.mark.parametrize(("status", "body"), [(503, S3_SLOW_DOWN), (500, b"")], ids=["SlowDown", "500"])
def test_server_errors_are_retried_then_unavailable(
    s3_server: S3Endpoint, s3_bucket: str, proxy: FaultyHttpProxy, status: int, body: bytes
) -> None:
    storage = make_storage(s3_server, s3_bucket, endpoint_url=proxy.url, max_attempts=3)

    proxy.fail_next(status, body, count=2)
    assert storage.put_bytes("k", b"x", content_type="text/plain").size == 1  # the third try passed

    proxy.requests.clear()
    proxy.fail_next(status, body, count=3)
    with pytest.raises(StorageUnavailableError, match=r"S3 put_bytes s3://\S+/k: .*HTTP " + str(status)):
        storage.put_bytes("k", b"y", content_type="text/plain")
    assert len(proxy.requests) == 3


def test_access_denied_is_terminal_and_not_retried(
    s3_server: S3Endpoint, s3_bucket: str, proxy: FaultyHttpProxy
) -> None:
    storage = make_storage(s3_server, s3_bucket, endpoint_url=proxy.url)
    proxy.fail_next(403, S3_ACCESS_DENIED, count=5)

    with pytest.raises(StorageDeniedError, match="Forbidden"):
        storage.stat("k")  # a HEAD answer has no body: only the status tells
    with pytest.raises(StorageDeniedError, match="AccessDenied"):
        storage.put_bytes("k", b"x", content_type="text/plain")
    assert len(proxy.requests) == 2


def test_unknown_credentials_are_denied_by_the_server(s3_bucket: str) -> None:
    with S3Server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as checking:  # moto then checks keys
        storage = make_storage(checking.endpoint, s3_bucket, access_key_id="AKIAUNKNOWN")
        with pytest.raises(StorageDeniedError, match="InvalidAccessKeyId"):
            storage.put_stream("k", chunked(b"a" * 10), content_type=GZIP)


def test_a_part_refused_mid_stream_aborts_the_upload(
    s3_server: S3Endpoint, s3_bucket: str, proxy: FaultyHttpProxy
) -> None:
    storage = make_storage(s3_server, s3_bucket, endpoint_url=proxy.url)
    proxy.fail_next(403, S3_ACCESS_DENIED, match=r"^PUT .*partNumber=2")

    with pytest.raises(StorageDeniedError, match=r"put_stream s3://\S+/big: AccessDenied"):
        storage.put_stream("big", chunked(b"z" * (3 * PART)), content_type=GZIP)

    assert any(line.startswith("DELETE") and "uploadId=" in line for line in proxy.requests)
    assert open_uploads(s3_server, s3_bucket) == []
    assert storage.stat("big") is None


def test_dropped_connections_are_retried(
    s3_server: S3Endpoint, s3_bucket: str, proxy: FaultyHttpProxy
) -> None:
    storage = make_storage(s3_server, s3_bucket, endpoint_url=proxy.url, max_attempts=2)
    proxy.drop_next()
    storage.put_bytes("k", b"x", content_type="text/plain")

    proxy.drop_next(count=2)
    with pytest.raises(StorageUnavailableError, match="after retries"):
        storage.get("k")


def test_a_stalled_server_times_out(s3_server: S3Endpoint, s3_bucket: str, proxy: FaultyHttpProxy) -> None:
    storage = make_storage(s3_server, s3_bucket, endpoint_url=proxy.url, max_attempts=2, read_timeout=0.3)
    proxy.add(Fault(delay=1.0), count=2)

    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="ReadTimeoutError"):
        storage.stat("k")
    assert time.monotonic() - started < 5


def test_endpoint_down_is_unavailable_quickly(s3_bucket: str, s3_server: S3Endpoint) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    storage = make_storage(s3_server, s3_bucket, endpoint_url=closed, max_attempts=3, connect_timeout=1)

    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="EndpointConnectionError"):
        storage.put_stream("k", chunked(b"a" * (PART + 1)), content_type=GZIP)
    with pytest.raises(StorageUnavailableError):
        storage.stat("k")
    assert time.monotonic() - started < 10  # two calls, three tries each, jittered backoff < 1+2 s


def test_the_command_line_server_runs_until_interrupted() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "connector.devtools.s3_server", "run"], cwd=REPO, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline().decode().strip()
        assert first.startswith("S3_ENDPOINT=http://127.0.0.1:")
        endpoint = S3Endpoint(first.split("=", 1)[1])
        endpoint.client().create_bucket(Bucket="demo")
        assert make_storage(endpoint, "demo").list_keys("") == []
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=15) == 0
    with pytest.raises(StorageUnavailableError):
        make_storage(endpoint, "demo", max_attempts=1).list_keys("")
