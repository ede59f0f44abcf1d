"""S3 as a snapshot file destination: the ``Storage`` interface over boto3.

How each guarantee of ``connector.sinks.storage`` is met:

- *Visible only when complete*: ``put_stream`` is a multipart upload, and S3 shows nothing under
  the key until ``CompleteMultipartUpload``; any failure aborts the upload (best effort; a
  killed process leaves an open upload that ``abort_incomplete`` removes). A stream shorter
  than one part is one ``PutObject``, atomic by itself.
- *Flat memory*: a part is sent as soon as a part's worth of chunks is buffered, so about two
  parts are held at once (the one being sent and the one being filled; ``_s3_multipart``).
- *Size and sha256 as stored*: the sha256 is computed while streaming and kept as the object's
  ``sha256`` metadata. Metadata can only be set when an upload starts, before the hash is known,
  so a multipart object is copied onto itself with the metadata added (``CopyObject``, asking S3
  for a SHA-256 checksum, which it computes over the stored bytes). Then ``HeadObject`` must
  report the bytes sent, the same sha256 when it reports one, and the version just written.
  Objects over 5 GiB (``CopyObject``'s limit) are not copied: ``stat`` returns no sha256 for
  them and the run treats them as unknown.
- *Atomic conditions*: ``IfNoneMatch: *`` and ``IfMatch: <etag>`` on ``PutObject``; the server
  answers 412 (``PreconditionFailedError``) or, for ``IfMatch`` on a missing key, 404.

Errors are classified once, in ``_s3_rules.storage_error``, after botocore's own bounded
retries (``standard`` mode). ``_s3_objects`` writes and checks one object; this module is the
``Storage`` interface around it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from connector.sinks._s3_objects import described, put_object, stream_object
from connector.sinks._s3_rules import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    Encryption,
    checked_metadata,
    error_code,
    http_status,
    settings_problems,
    split_metadata,
    sse_arguments,
    storage_error,
)
from connector.sinks.exceptions import (
    PreconditionFailedError,
    SinkConfigError,
    StorageDeniedError,
    StorageUnavailableError,
)
from connector.sinks.storage import StoredObject

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3Storage"]


class S3Storage:
    """One bucket as a ``Storage``; safe to share between threads (one boto3 client)."""

    def __init__(
        self,
        bucket: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        encryption: Encryption = "none",
        kms_key_id: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        addressing_style: Literal["auto", "path", "virtual"] = "auto",
    ) -> None:
        """Without ``access_key_id``/``secret_access_key`` boto3's default chain finds credentials
        (environment, profile, IRSA or instance role). ``max_attempts`` counts the first try:
        botocore retries 5xx, throttling and connection errors with capped, jittered backoff.
        """
        problems = settings_problems(
            bucket=bucket,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            encryption=encryption,
            kms_key_id=kms_key_id,
            part_size=part_size,
            max_attempts=max_attempts,
            timeouts=(connect_timeout, read_timeout),
        )
        if problems:
            raise SinkConfigError("S3 storage: " + "; ".join(problems))
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self._sse = sse_arguments(encryption, kms_key_id)
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
        )
        config = Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},  # counts the first try
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": addressing_style},
        )
        self._client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def name(self) -> str:
        return "s3"

    # -- writes ------------------------------------------------------------------------------
    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Buffer up to one part; a short stream is one ``PutObject``, a longer one multipart.

        Each full part goes to a worker thread while the caller produces the next one, so
        encoding and sending overlap; at most one part is in flight. A failure after the upload
        completed (the metadata copy or the check) can leave the complete new object visible,
        never a partial one; a retry overwrites it with the same bytes.
        """
        user = checked_metadata(metadata)
        with self._errors("put_stream", key):
            return stream_object(
                self._client, self.bucket, key, chunks, content_type, user, self._sse, self.part_size
            )

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> StoredObject:
        """One ``PutObject``; the condition is checked by S3 itself, atomically with the write.

        The server checks the bytes against the sha256 sent with them (``x-amz-checksum-sha256``);
        no ``HeadObject`` follows, as a competitor's write right after ours would fail it.
        """
        if if_none_match and if_match is not None:
            raise ValueError("put_bytes: give if_none_match or if_match, not both")
        user = checked_metadata(metadata)
        condition: dict[str, Any] = {}
        if if_none_match:
            condition["IfNoneMatch"] = "*"
        elif if_match is not None:
            condition["IfMatch"] = if_match
        try:
            with self._errors("put_bytes", key):
                digest = hashlib.sha256(data).digest()
                return put_object(
                    self._client,
                    self.bucket,
                    key,
                    data,
                    content_type,
                    user,
                    digest,
                    self._sse,
                    check=False,
                    **condition,
                )
        except StorageDeniedError as exc:  # IfMatch on a key that does not exist: S3 answers 404
            if if_match is not None and error_code(exc.__cause__) in {"NoSuchKey", "404"}:
                raise PreconditionFailedError(
                    f"S3 put_bytes {self._where(key)}: no object to replace"
                ) from exc
            raise

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def abort_incomplete(self, prefix: str) -> int:
        """Abort every open multipart upload under ``prefix``, including a live writer's: the
        caller holds the date's lease, so there is none."""
        aborted = 0
        with self._errors("abort_incomplete", prefix):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    try:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if error_code(exc) != "NoSuchUpload":  # aborted meanwhile: not ours to count
                            raise
                    else:
                        aborted += 1
        return aborted

    # -- reads -------------------------------------------------------------------------------
    def get(self, key: str) -> tuple[bytes, StoredObject] | None:
        """The bytes and their sha256; a stored ``sha256`` that disagrees is a transient error."""
        with self._errors("get", key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if http_status(exc) == 404 and error_code(exc) != "NoSuchBucket":
                    return None
                raise
            data = response["Body"].read()
        stored, user = split_metadata(response.get("Metadata", {}))
        sha256 = hashlib.sha256(data).hexdigest()
        if stored is not None and stored != sha256:
            raise StorageUnavailableError(
                f"S3 get {self._where(key)}: bytes read do not match the stored sha256"
            )
        return data, StoredObject(key, len(data), sha256, response["ETag"], user)

    def stat(self, key: str) -> StoredObject | None:
        with self._errors("stat", key):
            try:
                head = self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if http_status(exc) == 404:
                    return None
                raise
        return described(key, head)

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with self._errors("list_keys", prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    # -- internals ---------------------------------------------------------------------------
    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            mapped = storage_error(exc, f"S3 {operation} {self._where(key)}")
            if mapped is None:
                raise
            raise mapped from exc
