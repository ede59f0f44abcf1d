"""Names and the metadata sidecar of the SFTP storage: the pure part, kept apart to be unit-tested.

Everything the storage keeps besides the objects themselves is a dot-name in the object's own
directory (so each rename stays within one directory, hence one file system)::

    .<name>.partial-<hex>     bytes being written; renamed onto <name> when complete
    .<name>.meta.json         the sidecar: sha256, size, mtime, content type, metadata
    .<name>.aside-<hex>       the old version during an if_match swap

Keys therefore may not have a segment starting with ``.``; the project's keys never do
(``keys.py``: segments start with a letter, digit or ``_``).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Literal

from connector.sinks.exceptions import SinkConfigError

__all__ = [
    "SIDECAR_MAX_BYTES",
    "Debris",
    "Sidecar",
    "aside_name",
    "check_key",
    "may_contain",
    "parse_internal",
    "partial_name",
    "sidecar_name",
]

SIDECAR_MAX_BYTES = 1 << 20
"""A sidecar larger than this is not ours (metadata is small by contract): treated as absent."""
_PARTIAL = ".partial-"
_ASIDE = ".aside-"
_SIDECAR = ".meta.json"
_MARKERS: tuple[tuple[str, Literal["partial", "aside"]], ...] = ((_PARTIAL, "partial"), (_ASIDE, "aside"))


def check_key(key: str) -> str:
    """``key`` if it is a relative path whose segments are plain names, else ``SinkConfigError``."""
    segments = key.split("/")
    bad = not key or "\\" in key or "\x00" in key
    if bad or any(not s or s in (".", "..") or s.startswith(".") for s in segments):
        raise SinkConfigError(
            f"sftp key {key!r} must be a relative path of non-empty segments not starting with '.'"
        )
    return key


def partial_name(path: str, token: str) -> str:
    """The temporary name ``path`` is written under before its rename."""
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}{_PARTIAL}{token}")


def aside_name(path: str, token: str) -> str:
    """Where an ``if_match`` swap parks the current version of ``path``."""
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}{_ASIDE}{token}")


def sidecar_name(path: str) -> str:
    """The metadata sidecar of ``path``."""
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}{_SIDECAR}")


@dataclass(frozen=True, slots=True)
class Debris:
    """What an internal file name says: its kind and the object name it belongs to."""

    kind: Literal["partial", "aside", "sidecar"]
    name: str


def parse_internal(name: str) -> Debris | None:
    """Classify a file name the storage itself made; None for anything else.

    A sidecar's own temporary (``..<name>.meta.json.partial-<hex>``) is a ``partial`` of the
    object ``<name>``, so ``abort_incomplete`` matches it against the object's key.
    """
    if not name.startswith(".") or len(name) < 2:
        return None
    body = name[1:]
    for marker, kind in _MARKERS:
        stem, found, token = body.rpartition(marker)
        if found and stem and token and "/" not in token:
            inner = parse_internal(stem)
            if kind == "partial" and inner is not None and inner.kind == "sidecar":
                return Debris("partial", inner.name)
            return Debris(kind, stem)
    if body.endswith(_SIDECAR) and len(body) > len(_SIDECAR):
        return Debris("sidecar", body[: -len(_SIDECAR)])
    return None


def may_contain(rel_dir: str, prefix: str) -> bool:
    """Whether keys below directory ``rel_dir`` can start with ``prefix`` (prunes the walk)."""
    return (rel_dir + "/").startswith(prefix) or prefix.startswith(rel_dir + "/")


@dataclass(frozen=True, slots=True)
class Sidecar:
    """What SFTP cannot keep with a file, bound to the file by its size and mtime."""

    size: int
    mtime: int
    """Seconds, as SFTP v3 reports it; a rename keeps it, a rewrite changes it (mostly: see module)."""
    sha256: str
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = {
            "version": 1,
            "size": self.size,
            "mtime": self.mtime,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "metadata": self.metadata,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Sidecar | None:
        """The sidecar in ``raw``, or None when it is not one this version wrote (never raises)."""
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("version") != 1:
            return None
        size, mtime, sha, ctype, meta = (
            body.get(k) for k in ("size", "mtime", "sha256", "content_type", "metadata")
        )
        if not (isinstance(size, int) and isinstance(mtime, int) and not isinstance(size, bool)):
            return None
        if not (
            isinstance(sha, str) and len(sha) == 64 and isinstance(ctype, str) and isinstance(meta, dict)
        ):
            return None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            return None
        return cls(size, mtime, sha, ctype, {str(k): str(v) for k, v in meta.items()})
