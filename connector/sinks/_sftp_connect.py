"""Opening the SSH connection of ``connector.sinks.sftp``, with strict host-key checking.

Private to ``connector.sinks.sftp``, which owns the connection, its reuse and its retries.
An unknown or changed host key raises ``StorageDeniedError`` naming the host and the offered
key's fingerprint: paramiko's ``RejectPolicy`` fails at connect time, long after settings were
validated, and a retry cannot help. The private key is loaded when the storage is made, so a
bad file or passphrase fails at start-up. Secrets are never put in errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import paramiko  # type: ignore[import-untyped, unused-ignore]  # typed only with types-paramiko
from pydantic import SecretStr

from connector.sinks.exceptions import SinkConfigError, StorageDeniedError

__all__ = ["load_key", "open_sftp", "secret"]


class _UnknownHostKey(paramiko.SSHException):  # type: ignore[misc, unused-ignore]
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("host key not in known_hosts")
        self.key = key


class _RejectUnknownHosts(paramiko.RejectPolicy):  # type: ignore[misc, unused-ignore]
    """paramiko's ``RejectPolicy``, raising a typed error that carries the offered key."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise _UnknownHostKey(key)


def open_sftp(
    host: str,
    port: int,
    username: str,
    *,
    known_hosts: str,
    password: str | None,
    pkey: paramiko.PKey | None,
    connect_timeout: float,
    op_timeout: float,
) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    """A new SSH connection and its SFTP channel, every operation bounded by ``op_timeout``.

    Host-key and credential refusals raise ``StorageDeniedError``; connection errors pass
    through for the caller to retry. The client is closed on every failure.
    """
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(_RejectUnknownHosts())
    server = f"{host}:{port}"
    try:
        client.connect(
            host,
            port,
            username,
            password=password,
            pkey=pkey,
            timeout=connect_timeout,
            banner_timeout=connect_timeout,
            auth_timeout=connect_timeout,
            channel_timeout=connect_timeout,
            allow_agent=False,
            look_for_keys=False,
        )
        sftp = client.open_sftp()
    except _UnknownHostKey as exc:
        client.close()
        raise StorageDeniedError(
            f"sftp host {server} is not in known_hosts {known_hosts!r} "
            f"(it offered {_fingerprint(exc.key)}); refusing to connect"
        ) from None
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise StorageDeniedError(
            f"sftp host key of {server} does not match known_hosts {known_hosts!r} "
            f"(offered {_fingerprint(exc.key)}, expected {_fingerprint(exc.expected_key)}): "
            "possible impersonation, refusing to connect"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise StorageDeniedError(f"sftp server {server} refused the credentials of {username!r}") from None
    except BaseException:
        client.close()
        raise
    channel = sftp.get_channel()
    if channel is not None:  # a hung server fails an operation instead of blocking it forever
        channel.settimeout(op_timeout)
    return client, sftp


def load_key(path: Path, passphrase: str | None) -> paramiko.PKey:
    """The private key, loaded now so a bad file or passphrase fails at start-up, not at 02:00."""
    if not path.is_file():
        raise SinkConfigError(f"sftp private key file {str(path)!r} does not exist")
    try:
        return paramiko.PKey.from_path(path, passphrase)
    except (ValueError, OSError, paramiko.SSHException) as exc:  # the text may quote the file: not kept
        raise SinkConfigError(
            f"sftp private key file {str(path)!r} cannot be loaded ({type(exc).__name__}): "
            "not a private key, or its passphrase is missing or wrong"
        ) from None


def secret(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"
