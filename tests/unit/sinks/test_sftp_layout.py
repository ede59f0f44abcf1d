"""The SFTP storage's bookkeeping names and metadata sidecar (no server needed)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.sinks import SinkConfigError
from connector.sinks._sftp_layout import (
    Debris,
    Sidecar,
    aside_name,
    check_key,
    may_contain,
    parse_internal,
    partial_name,
    sidecar_name,
)

NAMES = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._=-]{0,30}", fullmatch=True)
TOKENS = st.from_regex(r"[0-9a-f]{1,32}", fullmatch=True)
SHA = "ab" * 32


@pytest.mark.parametrize("key", ["a", "carecloud/2026-03-08/Claim.csv.gz", "p/_manifest.json", "x..y"])
def test_plain_keys_are_accepted(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/", "./a", "a/../b", "..", "a/.hidden", ".meta", "a\\b", "a\x00b"]
)
def test_keys_that_could_escape_the_root_or_hide_are_refused(key: str) -> None:
    with pytest.raises(SinkConfigError, match="relative path"):
        check_key(key)


def test_names_stay_in_the_objects_directory() -> None:
    assert partial_name("/r/d/Claim.csv.gz", "ab12") == "/r/d/.Claim.csv.gz.partial-ab12"
    assert aside_name("/r/d/_run.json", "cd34") == "/r/d/._run.json.aside-cd34"
    assert sidecar_name("/r/d/Claim.csv.gz") == "/r/d/.Claim.csv.gz.meta.json"
    assert partial_name(sidecar_name("/r/x"), "1") == "/r/..x.meta.json.partial-1"


@given(NAMES, TOKENS)
def test_every_internal_name_is_recognised_with_its_object(name: str, token: str) -> None:
    assert parse_internal(partial_name(name, token)) == Debris("partial", name)
    assert parse_internal(aside_name(name, token)) == Debris("aside", name)
    assert parse_internal(sidecar_name(name)) == Debris("sidecar", name)
    assert parse_internal(partial_name(sidecar_name(name), token)) == Debris("partial", name)
    assert parse_internal(name) is None  # an object's own name is never debris


@pytest.mark.parametrize(
    "name", [".", "..", ".partial-1", ".x.partial-", ".meta.json", ".x.aside-", "x.partial-1"]
)
def test_other_names_are_not_debris(name: str) -> None:
    assert parse_internal(name) is None


@pytest.mark.parametrize(
    ("rel_dir", "prefix", "expected"),
    [
        ("a", "", True),
        ("a", "a/b", True),
        ("a", "ab", False),
        ("ab", "a", True),
        ("a/b", "a/b/", True),
        ("a/c", "a/b", False),
        ("a/bc", "a/b", True),
    ],
)
def test_the_walk_prunes_directories_that_cannot_match(rel_dir: str, prefix: str, expected: bool) -> None:
    assert may_contain(rel_dir, prefix) is expected


def test_sidecar_round_trip() -> None:
    sidecar = Sidecar(12, 1_773_000_000, SHA, "application/gzip", {"cut": "42", "entity": "Claim"})
    assert Sidecar.decode(sidecar.encode()) == sidecar


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"version": 2}',
        json.dumps(
            {"version": 1, "size": "12", "mtime": 1, "sha256": SHA, "content_type": "", "metadata": {}}
        ),
        json.dumps(
            {"version": 1, "size": True, "mtime": 1, "sha256": SHA, "content_type": "", "metadata": {}}
        ),
        json.dumps(
            {"version": 1, "size": 1, "mtime": 1, "sha256": "short", "content_type": "", "metadata": {}}
        ),
        json.dumps(
            {"version": 1, "size": 1, "mtime": 1, "sha256": SHA, "content_type": "", "metadata": {"a": 1}}
        ),
        json.dumps({"version": 1, "size": 1, "mtime": 1, "sha256": SHA, "content_type": "", "metadata": []}),
    ],
)
def test_a_sidecar_this_version_did_not_write_is_ignored(raw: bytes | str) -> None:
    assert Sidecar.decode(raw.encode() if isinstance(raw, str) else raw) is None
