"""The pure rules behind ``S3Storage``: settings, metadata and how S3's errors are classified.

Kept apart from the I/O so each rule is tested without a server
(``tests/unit/sinks/test_s3_config.py``), and so ``s3.py`` reads as the upload protocol only.

Error classes, decided once here for every operation: a 412 is ``PreconditionFailedError``; a 5xx,
throttling (``SlowDown``, 429), a timeout, a conflicting concurrent request (409) or a
connection failure is ``StorageUnavailableError`` (botocore has already retried it); bad or missing
credentials, a 403 and any other refusal are ``StorageDeniedError``. Messages carry the operation,
the key and S3's error code; S3's own message text is left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Literal

from botocore.exceptions import (
    ChecksumError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from connector.sinks.exceptions import PreconditionFailedError, StorageDeniedError, StorageUnavailableError

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_COPY_SIZE",
    "MIN_PART_SIZE",
    "SHA256_KEY",
    "Encryption",
    "checked_metadata",
    "error_code",
    "http_status",
    "settings_problems",
    "split_metadata",
    "sse_arguments",
    "storage_error",
]

_MiB = 1024 * 1024
MIN_PART_SIZE = 5 * _MiB
"""S3's smallest part (every part but the last)."""
DEFAULT_PART_SIZE = 16 * _MiB
MAX_COPY_SIZE = 5 * 1024 * _MiB
"""Largest object ``CopyObject`` accepts, and S3's largest part."""
SHA256_KEY = "sha256"
"""The metadata name under which the object's sha256 is kept."""

Encryption = Literal["none", "AES256", "aws:kms"]

_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9._-]*")
_METADATA_VALUE = re.compile(r"([\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?)?")
_MAX_METADATA_BYTES = 2048  # S3's limit for user metadata, names and values together
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable",
     "InternalError", "OperationAborted", "ConditionalRequestConflict", "NoSuchUpload"}
)  # fmt: skip
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
_NETWORK_ERRORS = (ConnectionError, HTTPClientError, IncompleteReadError, ChecksumError)


def settings_problems(
    *,
    bucket: str,
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    encryption: str,
    kms_key_id: str | None,
    part_size: int,
    max_attempts: int,
    timeouts: tuple[float, float],
) -> list[str]:
    """Every problem with the settings at once, so one start-up shows them all."""
    problems = []
    if not bucket:
        problems.append("bucket is empty")
    if not region:
        problems.append("region is empty")
    if (access_key_id is None) != (secret_access_key is None):
        problems.append("give both access_key_id and secret_access_key, or neither")
    if session_token is not None and access_key_id is None:
        problems.append("session_token needs access_key_id and secret_access_key")
    if encryption not in ("none", "AES256", "aws:kms"):
        problems.append(f"encryption {encryption!r}: expected none, AES256 or aws:kms")
    if kms_key_id is not None and encryption != "aws:kms":
        problems.append("kms_key_id needs encryption 'aws:kms'")
    if not MIN_PART_SIZE <= part_size <= MAX_COPY_SIZE:
        problems.append(f"part_size {part_size}: S3 parts are {MIN_PART_SIZE} to {MAX_COPY_SIZE} bytes")
    if max_attempts < 1:
        problems.append(f"max_attempts {max_attempts}: at least 1 (the first try)")
    if min(timeouts) <= 0:
        problems.append("connect_timeout and read_timeout must be positive")
    return problems


def sse_arguments(encryption: Encryption, kms_key_id: str | None) -> dict[str, Any]:
    """The server-side encryption arguments of every write (put, create upload, copy).

    ``aws:kms`` without a key id uses the account's AWS-managed key (``aws/s3``).
    """
    if encryption == "none":
        return {}
    if encryption == "aws:kms" and kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {"ServerSideEncryption": encryption}


def checked_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Refuse metadata S3 would not give back as given: HTTP lowercases names, trims values,
    and S3 mangles non-ASCII. Errors name the key, never the value."""
    user = dict(metadata or {})
    for key, value in user.items():
        if key == SHA256_KEY or not _METADATA_KEY.fullmatch(key):
            raise ValueError(f"metadata key {key!r}: lowercase [a-z0-9._-], and not {SHA256_KEY!r}")
        if not _METADATA_VALUE.fullmatch(value):
            raise ValueError(f"metadata {key!r}: printable ASCII without surrounding spaces")
    if sum(len(k) + len(v) for k, v in user.items()) + len(SHA256_KEY) + 64 > _MAX_METADATA_BYTES:
        raise ValueError(f"metadata larger than S3's {_MAX_METADATA_BYTES} bytes")
    return user


def split_metadata(metadata: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """The stored sha256 (if any) apart from the caller's own metadata."""
    user = dict(metadata)
    return user.pop(SHA256_KEY, None), user


def error_code(exc: BaseException | None) -> str:
    """S3's error code (``AccessDenied``, ``NoSuchKey``, ``404`` for a bodiless HEAD), or ``""``."""
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def storage_error(exc: Exception, context: str) -> Exception | None:
    """The sinks error for a botocore error, or None for a programming error to raise as is."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc), http_status(exc)
        detail = f"{context}: {_readable(code, status)} (HTTP {status})"
        if status == 412 or code == "PreconditionFailedError":
            return PreconditionFailedError(detail)
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 409, 429):
            return StorageUnavailableError(detail)
        return StorageDeniedError(detail)
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return StorageDeniedError(f"{context}: no usable credentials ({type(exc).__name__})")
    if isinstance(exc, _NETWORK_ERRORS):
        return StorageUnavailableError(f"{context}: {type(exc).__name__} after retries")
    return None


def _readable(code: str, status: int) -> str:
    """S3's code, or the status phrase when there is none (a HEAD answer has no body)."""
    if code and code != str(status):
        return code
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"
