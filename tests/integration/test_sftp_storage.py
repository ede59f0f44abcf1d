"""``SftpStorage`` against a real OpenSSH sshd on loopback: every ``Storage`` promise, over the wire.

The server's files are this machine's files, so a test reads ``sftp_root`` directly to see
what is on the server (debris included) and, where a crash is simulated, plants debris there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paramiko
import pytest

from connector.devtools.sftp_server import SftpServer, generate_key
from connector.sinks import (
    PreconditionFailedError,
    SftpStorage,
    SinkConfigError,
    StorageDeniedError,
    StorageUnavailableError,
    StoredObject,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CT = "application/octet-stream"


def make_storage(server: SftpServer, root: Path, **overrides: Any) -> SftpStorage:
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "known_hosts": server.known_hosts_path,
        "private_key": server.client_key_path,
        "root": str(root),
        "retries": 1,
        "backoff": 0.05,
    }
    return SftpStorage(**(settings | overrides))


@pytest.fixture
def store(sftp_server: SftpServer, sftp_root: Path) -> Iterator[SftpStorage]:
    with make_storage(sftp_server, sftp_root) as storage:
        yield storage


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_streamed_multi_mib_round_trip(store: SftpStorage, sftp_root: Path) -> None:
    chunks = [os.urandom(size) for size in (1, 65_536, 1_000_003, 3 << 20, 7, 2 << 20)]
    data = b"".join(chunks)
    stored = store.put_stream(
        "carecloud/2026-03-08/Claim.csv.gz", iter(chunks), content_type=CT, metadata={"cut": "42"}
    )
    sha = hashlib.sha256(data).hexdigest()
    assert (stored.key, stored.size, stored.sha256, stored.etag) == (
        "carecloud/2026-03-08/Claim.csv.gz",
        len(data),
        sha,
        sha,
    )
    assert (sftp_root / "carecloud/2026-03-08/Claim.csv.gz").read_bytes() == data
    got = store.get("carecloud/2026-03-08/Claim.csv.gz")
    assert got is not None
    assert got[0] == data
    assert got[1] == stored
    assert store.stat("carecloud/2026-03-08/Claim.csv.gz") == stored
    assert store.list_keys("carecloud/") == ["carecloud/2026-03-08/Claim.csv.gz"]
    assert files_under(sftp_root) == [
        "carecloud/2026-03-08/.Claim.csv.gz.meta.json",
        "carecloud/2026-03-08/Claim.csv.gz",
    ]


def test_memory_stays_flat_while_streaming(store: SftpStorage) -> None:
    block = os.urandom(1 << 20)
    tracemalloc.start()
    try:
        stored = store.put_stream("big.bin", (block for _ in range(24)), content_type=CT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stored.size == 24 << 20
    assert peak < 8 << 20, f"peak {peak} bytes while streaming 24 MiB"


_WRITER = """
import json, sys, time
from connector.sinks.sftp import SftpStorage

settings = json.loads(sys.argv[1])
def chunks():
    for _ in range(64):
        yield b"n" * 65536
    while True:  # never finishes: the test kills this process mid-upload
        time.sleep(0.2)
        yield b"n"

SftpStorage(**settings).put_stream("day/Claim.csv.gz", chunks(), content_type="application/gzip")
"""


def test_visible_only_when_complete_even_when_the_writer_is_killed(
    sftp_server: SftpServer, sftp_root: Path, store: SftpStorage, tmp_path: Path
) -> None:
    store.put_bytes("day/Claim.csv.gz", b"old", content_type=CT, metadata={"cut": "1"})
    settings = {
        "host": sftp_server.host,
        "port": sftp_server.port,
        "username": sftp_server.username,
        "known_hosts": str(sftp_server.known_hosts_path),
        "private_key": str(sftp_server.client_key_path),
        "root": str(sftp_root),
    }
    errors = tmp_path / "writer.err"
    with errors.open("wb") as err:
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, json.dumps(settings)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while not [
            p for p in (sftp_root / "day").glob(".Claim.csv.gz.partial-*") if p.stat().st_size >= 1 << 20
        ]:
            assert writer.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, "the writer never got 1 MiB out"
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    got = store.get("day/Claim.csv.gz")
    assert got is not None
    assert got[0] == b"old"
    assert got[1].metadata == {"cut": "1"}
    assert store.list_keys("") == ["day/Claim.csv.gz"]
    assert len(list((sftp_root / "day").glob(".Claim.csv.gz.partial-*"))) == 1
    assert store.abort_incomplete("day/") == 1
    assert files_under(sftp_root) == ["day/.Claim.csv.gz.meta.json", "day/Claim.csv.gz"]


def test_a_failing_chunk_source_propagates_and_leaves_nothing(store: SftpStorage, sftp_root: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a" * 100_000
        raise ValueError("the encoder failed")

    with pytest.raises(ValueError, match="the encoder failed"):
        store.put_stream("k/file.bin", chunks(), content_type=CT)
    assert store.stat("k/file.bin") is None
    assert files_under(sftp_root) == []


def test_put_replaces_an_existing_object_and_its_metadata(store: SftpStorage) -> None:
    store.put_stream("a/f.csv", [b"first version"], content_type=CT, metadata={"cut": "1"})
    second = store.put_stream("a/f.csv", [b"second", b" version"], content_type=CT, metadata={"cut": "2"})
    got = store.get("a/f.csv")
    assert got == (b"second version", second)
    assert store.stat("a/f.csv") == second
    assert second.metadata == {"cut": "2"}


def test_conditional_create_wins_once(store: SftpStorage) -> None:
    first = store.put_bytes("d/_lease.json", b'{"owner": "a"}', content_type=CT, if_none_match=True)
    with pytest.raises(PreconditionFailedError, match="exists"):
        store.put_bytes("d/_lease.json", b'{"owner": "b"}', content_type=CT, if_none_match=True)
    assert store.get("d/_lease.json") == (b'{"owner": "a"}', first)
    assert store.list_keys("d/") == ["d/_lease.json"]
    store.delete("d/_lease.json")
    assert store.put_bytes("d/_lease.json", b"again", content_type=CT, if_none_match=True).size == 5


def contend(storages: list[SftpStorage], attempt: Callable[..., StoredObject]) -> list[Any]:
    """Run ``attempt(storage, i)`` on every storage at once (connections made beforehand)."""
    for storage in storages:
        storage.list_keys("")  # connect now, so the barrier releases requests, not handshakes
    barrier = threading.Barrier(len(storages))

    def run(i: int) -> Any:
        barrier.wait()
        try:
            return attempt(storages[i], i)
        except PreconditionFailedError as exc:
            return exc

    with ThreadPoolExecutor(len(storages)) as pool:
        return list(pool.map(run, range(len(storages))))


def test_concurrent_creators_exactly_one_wins(sftp_server: SftpServer, sftp_root: Path) -> None:
    storages = [make_storage(sftp_server, sftp_root) for _ in range(6)]
    for round_ in range(3):
        key = f"race/{round_}/_lease.json"
        outcomes = contend(
            storages,
            lambda s, i, key=key: s.put_bytes(
                key, f"owner {i}".encode(), content_type=CT, if_none_match=True
            ),
        )
        winners = [i for i, o in enumerate(outcomes) if not isinstance(o, PreconditionFailedError)]
        assert len(winners) == 1, outcomes
        assert (sftp_root / key).read_bytes() == f"owner {winners[0]}".encode()
    assert [f for f in files_under(sftp_root) if ".partial-" in f] == []
    for storage in storages:
        storage.close()


def test_conditional_replace_both_outcomes(store: SftpStorage) -> None:
    v1 = store.put_bytes("d/_run.json", b"v1", content_type=CT, metadata={"n": "1"})
    v2 = store.put_bytes("d/_run.json", b"v2", content_type=CT, metadata={"n": "2"}, if_match=v1.etag)
    assert store.get("d/_run.json") == (b"v2", v2)
    with pytest.raises(PreconditionFailedError, match="changed"):
        store.put_bytes("d/_run.json", b"v3", content_type=CT, if_match=v1.etag)
    assert store.get("d/_run.json") == (b"v2", v2)
    with pytest.raises(PreconditionFailedError, match="no object"):
        store.put_bytes("d/absent.json", b"x", content_type=CT, if_match=v1.etag)
    assert store.list_keys("d/") == ["d/_run.json"]


def test_concurrent_swappers_exactly_one_wins(sftp_server: SftpServer, sftp_root: Path) -> None:
    storages = [make_storage(sftp_server, sftp_root) for _ in range(6)]
    base = storages[0].put_bytes("d/_lease.json", b"v0", content_type=CT)
    outcomes = contend(
        storages,
        lambda s, i: s.put_bytes("d/_lease.json", f"v{i + 1}".encode(), content_type=CT, if_match=base.etag),
    )
    winners = [i for i, o in enumerate(outcomes) if not isinstance(o, PreconditionFailedError)]
    assert len(winners) == 1, outcomes
    assert (sftp_root / "d/_lease.json").read_bytes() == f"v{winners[0] + 1}".encode()
    assert files_under(sftp_root) == ["d/._lease.json.meta.json", "d/_lease.json"]
    for storage in storages:
        storage.close()


def test_abort_incomplete_restores_a_swap_interrupted_by_a_crash(store: SftpStorage, sftp_root: Path) -> None:
    stored = store.put_bytes("d/_run.json", b"pinned cut", content_type=CT, metadata={"cut": "7"})
    (sftp_root / "d/_run.json").rename(sftp_root / "d/._run.json.aside-0123abcd")  # crashed mid-swap
    (sftp_root / "d/.gone.csv.meta.json").write_text("{}")  # orphaned sidecar
    (sftp_root / "e").mkdir()
    (sftp_root / "e/.x.partial-99").write_bytes(b"elsewhere")  # outside the prefix: kept
    assert store.stat("d/_run.json") is None
    assert store.abort_incomplete("d/") == 2
    assert store.get("d/_run.json") == (b"pinned cut", stored)
    assert files_under(sftp_root) == ["d/._run.json.meta.json", "d/_run.json", "e/.x.partial-99"]


def test_stat_does_not_trust_a_sidecar_of_other_bytes(store: SftpStorage, sftp_root: Path) -> None:
    store.put_bytes("f.csv", b"short", content_type=CT, metadata={"cut": "1"})
    (sftp_root / "f.csv").write_bytes(b"rewritten by someone else")
    described = store.stat("f.csv")
    sha = hashlib.sha256(b"rewritten by someone else").hexdigest()
    assert described is not None
    assert (described.size, described.sha256, described.etag, described.metadata) == (25, sha, sha, {})


def test_listing_absent_and_delete(store: SftpStorage, sftp_root: Path) -> None:
    for key in ("p/2026-03-08/A.csv", "p/2026-03-08/B.csv", "p/2026-03-09/A.csv", "q/A.csv", "pz.csv"):
        store.put_bytes(key, b"x", content_type=CT)
    (sftp_root / "p/2026-03-08/.A.csv.partial-1").write_bytes(b"debris")
    assert store.list_keys("p/2026-03-08/") == ["p/2026-03-08/A.csv", "p/2026-03-08/B.csv"]
    assert store.list_keys("p") == [
        "p/2026-03-08/A.csv",
        "p/2026-03-08/B.csv",
        "p/2026-03-09/A.csv",
        "pz.csv",
    ]
    assert store.list_keys("nothing/") == []
    assert store.get("p/none.csv") is None
    assert store.stat("p/2026-03-08") is None  # a directory is not an object
    assert store.get("p/2026-03-08") is None
    store.delete("p/2026-03-08/A.csv")
    store.delete("p/2026-03-08/A.csv")
    assert store.list_keys("p/2026-03-08/") == ["p/2026-03-08/B.csv"]
    assert not (sftp_root / "p/2026-03-08/.A.csv.meta.json").exists()


def test_unknown_host_is_refused(sftp_server: SftpServer, sftp_root: Path, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    port = sftp_server.port
    known_hosts.write_text(
        sftp_server.known_hosts_path.read_text().replace(f"]:{port} ", "]:1 ")
    )  # another port
    storage = make_storage(sftp_server, sftp_root, known_hosts=known_hosts)
    with pytest.raises(
        StorageDeniedError, match=rf"{sftp_server.host}:{sftp_server.port} is not in known_hosts"
    ):
        storage.stat("x")


def test_changed_host_key_is_refused(sftp_server: SftpServer, sftp_root: Path, tmp_path: Path) -> None:
    generate_key(tmp_path / "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp_server.known_hosts_line(tmp_path / "impostor.pub"))
    storage = make_storage(sftp_server, sftp_root, known_hosts=known_hosts)
    with pytest.raises(
        StorageDeniedError, match=rf"host key of {sftp_server.host}:{sftp_server.port} does not match"
    ):
        storage.put_bytes("x", b"never sent", content_type=CT)
    assert files_under(sftp_root) == []


def test_wrong_client_key_and_password_are_refused(
    sftp_server: SftpServer, sftp_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = generate_key(tmp_path / "stranger")
    started = time.monotonic()
    with pytest.raises(StorageDeniedError, match="refused the credentials"):
        make_storage(sftp_server, sftp_root, private_key=stranger, retries=3).stat("x")
    assert time.monotonic() - started < 5, "a refusal is terminal: no retries"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StorageDeniedError) as refused:
        make_storage(sftp_server, sftp_root, private_key=None, password="hunter2-secret").stat("x")
    assert "hunter2" not in str(refused.value)
    assert "hunter2" not in caplog.text


def test_root_that_is_not_a_directory(sftp_server: SftpServer, sftp_root: Path) -> None:
    with pytest.raises(SinkConfigError, match="not a directory"):
        make_storage(sftp_server, sftp_root / "missing").list_keys("")


def test_server_down_is_unavailable_within_bounded_time(tmp_path: Path) -> None:
    with SftpServer(tmp_path / "private") as private:
        (private.root_dir / "r").mkdir()
        storage = make_storage(private, private.root_dir / "r", retries=2, backoff=0.1, connect_timeout=2.0)
        storage.put_bytes("k", b"before", content_type=CT)
        private.stop()  # drops the open session too
        started = time.monotonic()
        with pytest.raises(
            StorageUnavailableError, match=r"sftp get 'k' on 127\.0\.0\.1:\d+ failed after 3 attempt"
        ):
            storage.get("k")
        assert time.monotonic() - started < 5
        private.start()  # same port and keys: the storage reconnects by itself
        got = storage.get("k")
        assert got is not None
        assert got[0] == b"before"
        storage.close()


def test_a_stream_cut_by_the_server_is_not_replayed(tmp_path: Path) -> None:
    with SftpServer(tmp_path / "private") as private:
        (private.root_dir / "r").mkdir()
        storage = make_storage(private, private.root_dir / "r", retries=3)

        def chunks() -> Iterator[bytes]:
            for i in range(64):
                if i == 8:
                    private.stop()  # the session dies under the upload
                yield b"z" * 65536

        with pytest.raises(StorageUnavailableError, match="failed after 1 attempt"):
            storage.put_stream("day/Claim.csv.gz", chunks(), content_type=CT)
        private.start()
        assert storage.stat("day/Claim.csv.gz") is None
        assert storage.abort_incomplete("") == 1
        assert files_under(private.root_dir / "r") == []
        storage.close()


def test_hung_server_is_unavailable_within_bounded_time(tmp_path: Path) -> None:
    with SftpServer(tmp_path / "private") as private:
        (private.root_dir / "r").mkdir()
        storage = make_storage(private, private.root_dir / "r", op_timeout=1.0, connect_timeout=1.0)
        storage.put_bytes("k", b"before", content_type=CT)
        private.pause()  # connections stay open, nothing answers
        try:
            started = time.monotonic()
            with pytest.raises(StorageUnavailableError, match="failed after 2 attempt"):
                storage.get("k")
            assert time.monotonic() - started < 8
        finally:
            private.resume()
        got = storage.get("k")
        assert got is not None
        assert got[0] == b"before"
        storage.close()


def test_openssh_rename_semantics(sftp_server: SftpServer, sftp_root: Path) -> None:
    """What the storage builds on: v3 rename refuses an existing target, posix-rename replaces it."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(sftp_server.known_hosts_path))
    client.connect(
        sftp_server.host,
        sftp_server.port,
        sftp_server.username,
        key_filename=str(sftp_server.client_key_path),
        allow_agent=False,
        look_for_keys=False,
    )
    with client, client.open_sftp() as sftp:
        a, b = str(sftp_root / "a"), str(sftp_root / "b")
        for path, data in ((a, b"A"), (b, b"B")):
            with sftp.open(path, "wb") as f:
                f.write(data)
        with pytest.raises(OSError, match="Failure"):
            sftp.rename(a, b)
        assert (sftp_root / "b").read_bytes() == b"B"
        sftp.posix_rename(a, b)
        assert (sftp_root / "b").read_bytes() == b"A"
        assert not (sftp_root / "a").exists()
        with pytest.raises(FileNotFoundError):
            sftp.posix_rename(a, b)  # of two renames of one file, the second finds nothing
