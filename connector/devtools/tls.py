"""A throwaway certificate authority and server certificate for the test broker's TLS listener.

The SASL_SSL broker must present a certificate that librdkafka verifies the way it would in
production (hostname checked against the SAN), so tests exercise the same TLS path as the
deployed connector. Java wants PKCS12 stores, librdkafka wants a PEM CA: both are made here
from one CA with the stock ``openssl`` and ``keytool`` CLIs, so no Python crypto dependency is
added for a test-only need. The key material is valid for two days and never leaves the
broker's work dir.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SERVER_SAN", "TlsMaterial", "make_tls_material", "tls_material"]

SERVER_SAN = "DNS:localhost,IP:127.0.0.1"
"""The broker is advertised as ``localhost`` and reached on 127.0.0.1; both must verify."""

_DAYS = "2"


@dataclass(frozen=True)
class TlsMaterial:
    """Paths to the generated stores; one password protects both PKCS12 files."""

    ca_pem: Path
    keystore: Path
    truststore: Path
    password: str

    def broker_properties(self) -> dict[str, str]:
        """The broker's ``ssl.*`` settings for these stores (PKCS12, one password)."""
        return {
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.password,
            "ssl.key.password": self.password,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(self.truststore),
            "ssl.truststore.password": self.password,
        }


def _run(args: list[str], cwd: Path) -> None:
    tool = shutil.which(args[0])
    if tool is None:
        raise RuntimeError(f"{args[0]} is not on PATH; it is needed to make the test broker's certificates")
    done = subprocess.run([tool, *args[1:]], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} {args[1]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def make_tls_material(directory: Path) -> TlsMaterial:
    """Create CA, server key/cert, keystore and truststore in ``directory``.

    A fresh CA per broker keeps tests independent: nothing trusts it but the clients that
    are handed its PEM by ``KafkaBroker.client_config()``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    ext = directory / "server-ext.cnf"
    ext.write_text(
        f"subjectAltName={SERVER_SAN}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", _DAYS,
            "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=carecloud-connector test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        directory,
    )  # fmt: skip
    _run(
        [
            "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        ],
        directory,
    )  # fmt: skip
    _run(
        [
            "openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", _DAYS, "-sha256", "-extfile", ext.name,
        ],
        directory,
    )  # fmt: skip
    _run(
        [
            "openssl", "pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key",
            "-certfile", "ca.pem", "-name", "localhost", "-out", "server.keystore.p12",
            "-passout", f"pass:{password}",
        ],
        directory,
    )  # fmt: skip
    _run(
        [
            "keytool", "-importcert", "-noprompt", "-alias", "carecloud-test-ca", "-file", "ca.pem",
            "-keystore", "truststore.p12", "-storetype", "PKCS12", "-storepass", password,
        ],
        directory,
    )  # fmt: skip
    return TlsMaterial(
        ca_pem=directory / "ca.pem",
        keystore=directory / "server.keystore.p12",
        truststore=directory / "truststore.p12",
        password=password,
    )


def tls_material(directory: Path) -> TlsMaterial:
    """The material already in ``directory``, else new material written there.

    A restarted broker must present the certificate its clients were given the CA of, so the
    store password is kept beside the stores rather than only in memory.
    """
    password_file = directory / "password"
    if password_file.is_file():
        return TlsMaterial(
            ca_pem=directory / "ca.pem",
            keystore=directory / "server.keystore.p12",
            truststore=directory / "truststore.p12",
            password=password_file.read_text(),
        )
    material = make_tls_material(directory)
    password_file.write_text(material.password)
    return material
