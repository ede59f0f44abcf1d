"""Sinks stage: how snapshot files are encoded and named (storage backends build on these).

``formats`` streams an entity's records as CSV or JSON Lines and gzips the stream; ``keys``
names the objects deterministically, so a retry overwrites rather than adds. The file layout
for CareCloud's ingest team is in ``docs/file-format.md``.
"""

from connector.sinks.exceptions import (
    EncodeError,
    PortalAuthError,
    PortalBackpressureError,
    PortalMismatchError,
    PortalRejectedError,
    PortalUnavailableError,
    PreconditionFailedError,
    SinkConfigError,
    StorageDeniedError,
    StorageUnavailableError,
)
from connector.sinks.formats import (
    CSV,
    DEFAULT_GZIP_LEVEL,
    FORMATS,
    GZIP_CONTENT_TYPE,
    JSON_LINES,
    CsvFormat,
    Format,
    JsonLinesFormat,
    RowWriter,
    gzip_chunks,
    neutralise,
)
from connector.sinks.keys import MANIFEST_NAME, control_key, day_prefix, manifest_key, object_key
from connector.sinks.portal import ApiDelivery, PortalClient
from connector.sinks.s3 import S3Storage
from connector.sinks.sftp import SftpStorage
from connector.sinks.storage import Storage, StoredObject

__all__ = [
    "CSV",
    "DEFAULT_GZIP_LEVEL",
    "FORMATS",
    "GZIP_CONTENT_TYPE",
    "JSON_LINES",
    "MANIFEST_NAME",
    "ApiDelivery",
    "CsvFormat",
    "EncodeError",
    "Format",
    "JsonLinesFormat",
    "PortalAuthError",
    "PortalBackpressureError",
    "PortalClient",
    "PortalMismatchError",
    "PortalRejectedError",
    "PortalUnavailableError",
    "PreconditionFailedError",
    "RowWriter",
    "S3Storage",
    "SftpStorage",
    "SinkConfigError",
    "Storage",
    "StorageDeniedError",
    "StorageUnavailableError",
    "StoredObject",
    "control_key",
    "day_prefix",
    "gzip_chunks",
    "manifest_key",
    "neutralise",
    "object_key",
]
