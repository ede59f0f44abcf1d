"""One S3 object written and checked against the server (private to ``connector.sinks.s3``).

A stream is buffered up to one part: a short one is one ``PutObject``, a longer one a multipart
upload (``_s3_multipart``), aborted on any failure. Our sha256 goes along as metadata and as the
checksum S3 checks on arrival; a multipart object is copied onto itself to add it (metadata can
only be set before the hash is known), and ``HeadObject`` must then report the bytes sent, the
same sha256 and the version just written. ``connector.sinks.s3`` states the guarantees; errors
are its to classify (``_s3_rules.storage_error``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from connector.sinks._s3_multipart import Multipart
from connector.sinks._s3_rules import MAX_COPY_SIZE, SHA256_KEY, split_metadata
from connector.sinks.exceptions import PreconditionFailedError, StorageUnavailableError
from connector.sinks.storage import StoredObject

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

__all__ = ["described", "put_object", "stream_object"]


def stream_object(
    client: S3Client,
    bucket: str,
    key: str,
    chunks: Iterable[bytes],
    content_type: str,
    user: dict[str, str],
    sse: dict[str, Any],
    part_size: int,
) -> StoredObject:
    """Buffer up to one part; a short stream is one ``PutObject``, a longer one multipart.

    Each full part goes to a worker thread while the caller produces the next one, so
    encoding and sending overlap; at most one part is in flight. A failure after the upload
    completed (the metadata copy or the check) can leave the complete new object visible,
    never a partial one; a retry overwrites it with the same bytes.
    """
    digest = hashlib.sha256()
    buffered: list[bytes] = []
    size = sent = 0
    upload: Multipart | None = None
    try:
        for chunk in chunks:
            digest.update(chunk)
            buffered.append(chunk)
            size += len(chunk)
            if size - sent >= part_size:
                if upload is None:
                    upload = Multipart(client, bucket, key, content_type, user, sse)
                part = b"".join(buffered)
                buffered.clear()
                upload.send(part)
                sent += len(part)
        if upload is None:
            return put_object(
                client, bucket, key, b"".join(buffered), content_type, user, digest.digest(), sse
            )
        if buffered:
            upload.send(b"".join(buffered))
            buffered.clear()
        etag = upload.complete()
    except BaseException:
        if upload is not None:
            upload.abort()
        raise
    sha256 = digest.hexdigest()
    if size <= MAX_COPY_SIZE:
        etag = _add_sha256(client, bucket, key, etag, content_type, user, sha256, sse)
    return _verify(client, bucket, key, size, sha256, etag)


def put_object(
    client: S3Client,
    bucket: str,
    key: str,
    data: bytes,
    content_type: str,
    user: dict[str, str],
    digest: bytes,
    sse: dict[str, Any],
    *,
    check: bool = True,
    **condition: Any,
) -> StoredObject:
    """``PutObject`` with our sha256 as metadata and as the checksum S3 verifies on arrival."""
    response = client.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ContentType=content_type,
        Metadata={**user, SHA256_KEY: digest.hex()},
        ChecksumSHA256=base64.b64encode(digest).decode(),
        **sse,
        **condition,
    )
    if check:
        return _verify(client, bucket, key, len(data), digest.hex(), response["ETag"])
    return StoredObject(key, len(data), digest.hex(), response["ETag"], user)


def _add_sha256(
    client: S3Client,
    bucket: str,
    key: str,
    etag: str,
    content_type: str,
    user: dict[str, str],
    sha256: str,
    sse: dict[str, Any],
) -> str:
    """Copy the completed object onto itself with ``sha256`` added; returns the new etag.

    ``CopySourceIfMatch`` makes it a no-op with 412 if another writer replaced the object.
    """
    response = client.copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": bucket, "Key": key},
        CopySourceIfMatch=etag,
        MetadataDirective="REPLACE",
        ContentType=content_type,
        Metadata={**user, SHA256_KEY: sha256},
        ChecksumAlgorithm="SHA256",
        **sse,
    )
    return response["CopyObjectResult"]["ETag"]


def _verify(client: S3Client, bucket: str, key: str, size: int, sha256: str, etag: str) -> StoredObject:
    """The server's view must be the bytes we sent, in the version we wrote."""
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    where = f"s3://{bucket}/{key}"
    if head["ETag"] != etag:
        raise PreconditionFailedError(f"S3 put_stream {where}: replaced by another writer meanwhile")
    if head["ContentLength"] != size:
        raise StorageUnavailableError(
            f"S3 put_stream {where}: {head['ContentLength']} bytes stored, {size} sent"
        )
    reported = head.get("ChecksumSHA256")  # a composite (per-part) checksum is no object hash
    full_object = head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    if reported and full_object and base64.b64decode(reported).hex() != sha256:
        raise StorageUnavailableError(f"S3 put_stream {where}: stored sha256 differs from the bytes sent")
    return described(key, head, sha256=sha256)


def described(key: str, head: HeadObjectOutputTypeDef, *, sha256: str | None = None) -> StoredObject:
    """The ``StoredObject`` a ``HeadObject`` describes (``sha256``: the one just computed)."""
    stored, user = split_metadata(head.get("Metadata", {}))
    return StoredObject(key, head["ContentLength"], sha256 or stored, head["ETag"], user)
