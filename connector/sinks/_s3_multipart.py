"""One multipart upload with at most one part in flight, for ``S3Storage.put_stream``.

The caller fills the next part while a worker thread sends the previous one, so encoding and
sending overlap; waiting for the previous part before starting the next bounds memory to about
two parts. Measured against moto with a gzip-encoding producer (33 MiB, 5 MiB parts, 2 cores
shared with the server): 2.81 s against 3.12 s sequential, median of four; against a remote S3
the send is network-bound and hides almost entirely behind the encoding.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["Multipart"]


class Multipart:
    """One multipart upload with at most one part in flight on a worker thread."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        content_type: str,
        user: dict[str, str],
        sse: dict[str, Any],
    ) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        created = client.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type, Metadata=user, **sse
        )
        self._upload_id = created["UploadId"]
        self._parts: list[CompletedPartTypeDef] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-part")
        self._in_flight: Future[None] | None = None

    def send(self, data: bytes) -> None:
        """Wait for the previous part (raising its error), then start this one."""
        self._wait()
        self._in_flight = self._pool.submit(self._upload_part, len(self._parts) + 1, data)

    def complete(self) -> str:
        self._wait()
        self._pool.shutdown()
        response = self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        return response["ETag"]

    def abort(self) -> None:
        """Best effort: a failed abort leaves debris for ``abort_incomplete``, not a wrong object."""
        with contextlib.suppress(Exception):  # the part's own error is not the one to report
            self._wait()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _upload_part(self, number: int, data: bytes) -> None:
        response = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
