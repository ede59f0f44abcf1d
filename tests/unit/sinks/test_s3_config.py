"""The S3 storage's pure rules: settings, encryption arguments, metadata, error classification."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError as BotoClientError
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from connector.errors import TerminalError, TransientError
from connector.sinks import (
    PreconditionFailedError,
    S3Storage,
    SinkConfigError,
    StorageDeniedError,
    StorageUnavailableError,
)
from connector.sinks._s3_rules import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    checked_metadata,
    split_metadata,
    sse_arguments,
    storage_error,
)

MiB = 1024 * 1024


def storage(**overrides: Any) -> S3Storage:
    settings: dict[str, Any] = {
        "region": "us-east-1",
        "endpoint_url": "http://127.0.0.1:9",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "s3cr3t-value",
    }
    return S3Storage("bucket-name", **(settings | overrides))


def client_error(status: int, code: str, message: str = "server text") -> BotoClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return BotoClientError(response, "PutObject")


def test_defaults_and_name() -> None:
    s3 = storage()
    assert s3.name == "s3"
    assert s3.part_size == DEFAULT_PART_SIZE == 16 * MiB
    assert "s3cr3t" not in repr(s3)


@pytest.mark.parametrize("part_size", [MIN_PART_SIZE - 1, 1 * MiB, 0, 5 * 1024 * MiB + 1])
def test_part_size_outside_s3_limits_is_refused(part_size: int) -> None:
    with pytest.raises(SinkConfigError, match="part_size"):
        storage(part_size=part_size)


def test_smallest_part_size_is_accepted() -> None:
    assert storage(part_size=5 * MiB).part_size == 5 * MiB


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SinkConfigError) as caught:
        storage(
            secret_access_key=None,
            encryption="AES256",
            kms_key_id="alias/snapshots",
            part_size=MiB,
            max_attempts=0,
            read_timeout=0,
        )
    message = str(caught.value)
    for expected in ("access_key_id", "kms_key_id", "part_size", "max_attempts", "read_timeout"):
        assert expected in message
    assert isinstance(caught.value, ValueError)


def test_session_token_needs_keys() -> None:
    with pytest.raises(SinkConfigError, match="session_token"):
        storage(access_key_id=None, secret_access_key=None, session_token="token")


def test_default_credential_chain_when_no_keys_given() -> None:
    assert storage(access_key_id=None, secret_access_key=None).bucket == "bucket-name"


def test_unknown_encryption_is_refused() -> None:
    with pytest.raises(SinkConfigError, match="encryption"):
        storage(encryption="aws:kms:dsse")


@pytest.mark.parametrize(
    ("encryption", "kms_key_id", "expected"),
    [
        ("none", None, {}),
        ("AES256", None, {"ServerSideEncryption": "AES256"}),
        ("aws:kms", None, {"ServerSideEncryption": "aws:kms"}),
        ("aws:kms", "alias/snap", {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/snap"}),
    ],
)
def test_sse_arguments(encryption: Any, kms_key_id: str | None, expected: dict[str, str]) -> None:
    assert sse_arguments(encryption, kms_key_id) == expected


def test_metadata_that_round_trips_is_kept() -> None:
    metadata = {"cut": "2026-03-08T00:00:00-08:00", "run-id": "r1", "empty": ""}
    assert checked_metadata(metadata) == metadata
    assert checked_metadata(None) == {}


@pytest.mark.parametrize(
    "metadata",
    [{"Cut": "x"}, {"sha256": "x"}, {"with space": "x"}, {"k": "caf\u00e9"}, {"k": " padded"}, {"k": "a\nb"}],
)
def test_metadata_s3_would_change_is_refused_without_echoing_the_value(metadata: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="metadata") as caught:
        checked_metadata(metadata)
    value = next(iter(metadata.values()))
    assert value == "x" or value not in str(caught.value)


def test_metadata_over_s3_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="2048"):
        checked_metadata({"big": "x" * 2000})


def test_stored_sha256_is_split_from_the_callers_metadata() -> None:
    assert split_metadata({"sha256": "ab", "cut": "c"}) == ("ab", {"cut": "c"})
    assert split_metadata({"cut": "c"}) == (None, {"cut": "c"})


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (503, "SlowDown", StorageUnavailableError),
        (500, "InternalError", StorageUnavailableError),
        (502, "", StorageUnavailableError),
        (429, "TooManyRequests", StorageUnavailableError),
        (400, "RequestTimeout", StorageUnavailableError),
        (409, "ConditionalRequestConflict", StorageUnavailableError),
        (403, "AccessDenied", StorageDeniedError),
        (403, "InvalidAccessKeyId", StorageDeniedError),
        (403, "SignatureDoesNotMatch", StorageDeniedError),
        (400, "ExpiredToken", StorageDeniedError),
        (404, "NoSuchBucket", StorageDeniedError),
        (412, "PreconditionFailedError", PreconditionFailedError),
    ],
)
def test_client_errors_are_classified(status: int, code: str, expected: type[Exception]) -> None:
    error = storage_error(client_error(status, code), "S3 put_bytes s3://b/k")
    assert type(error) is expected
    assert "S3 put_bytes s3://b/k" in str(error)
    assert f"HTTP {status}" in str(error)
    assert "server text" not in str(error)


def test_a_bodiless_answer_is_named_by_its_status() -> None:
    assert (
        str(storage_error(client_error(403, "403"), "S3 stat s3://b/k"))
        == "S3 stat s3://b/k: Forbidden (HTTP 403)"
    )
    assert "error (HTTP 0)" in str(storage_error(client_error(0, ""), "S3 stat s3://b/k"))


def test_transient_and_terminal_by_class() -> None:
    assert issubclass(StorageUnavailableError, TransientError)
    assert issubclass(StorageDeniedError, TerminalError)
    assert issubclass(PreconditionFailedError, TerminalError)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), StorageUnavailableError),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"), StorageUnavailableError),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), StorageUnavailableError),
        (NoCredentialsError(), StorageDeniedError),
    ],
)
def test_botocore_errors_are_classified(error: Exception, expected: type[Exception]) -> None:
    assert type(storage_error(error, "S3 stat s3://b/k")) is expected


def test_programming_errors_are_not_disguised() -> None:
    assert storage_error(ParamValidationError(report="bad"), "S3 stat s3://b/k") is None
