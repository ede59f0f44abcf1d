"""``SftpStorage`` settings that are refused before any connection is made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connector.devtools.sftp_server import generate_key
from connector.sinks import SftpStorage, SinkConfigError


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    return {
        "host": "sftp.example.invalid",
        "username": "carecloud",
        "known_hosts": known_hosts,
        "private_key": generate_key(tmp_path / "id_ed25519"),
        "root": "/upload",
    }


def test_valid_settings_make_a_storage_without_connecting(settings: dict[str, Any]) -> None:
    storage = SftpStorage(**settings)
    assert storage.name == "sftp"
    assert repr(storage) == "SftpStorage(carecloud@sftp.example.invalid:22, root='/upload')"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"known_hosts": "/nonexistent/known_hosts"}, "known_hosts file"),
        ({"private_key": None}, "private key file or a password"),
        ({"private_key": "/nonexistent/id"}, "does not exist"),
        ({"port": 0}, "port"),
        ({"root": ""}, "root"),
        ({"retries": -1}, "retries"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], change: dict[str, Any], message: str) -> None:
    with pytest.raises(SinkConfigError, match=message):
        SftpStorage(**(settings | change))


def test_a_file_that_is_not_a_private_key_is_refused(settings: dict[str, Any], tmp_path: Path) -> None:
    not_a_key = tmp_path / "id_rsa"
    not_a_key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-looking-junk\n")
    with pytest.raises(SinkConfigError, match="cannot be loaded") as refused:
        SftpStorage(**(settings | {"private_key": not_a_key}))
    assert "junk" not in str(refused.value)


def test_the_password_never_shows(settings: dict[str, Any]) -> None:
    storage = SftpStorage(**(settings | {"private_key": None, "password": SecretStr("hunter2-secret")}))
    assert "hunter2" not in repr(storage)
    assert "hunter2" not in str(storage)


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/.meta.json"])
def test_bad_keys_are_refused_before_connecting(settings: dict[str, Any], key: str) -> None:
    storage = SftpStorage(**settings)
    with pytest.raises(SinkConfigError, match="relative path"):
        storage.stat(key)


def test_both_conditions_at_once_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(SinkConfigError, match="not both"):
        SftpStorage(**settings).put_bytes("k", b"x", content_type="t", if_none_match=True, if_match="e")
