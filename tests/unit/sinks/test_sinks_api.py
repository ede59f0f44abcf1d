"""The sinks stage's public surface: what ``connector.sinks`` exports, and every module's ``__all__``."""

from __future__ import annotations

import importlib

import pytest

import connector.sinks
from connector.errors import ConfigError, TerminalError
from connector.sinks import EncodeError, SinkConfigError


def test_exported_names_are_what_was_meant() -> None:
    assert sorted(connector.sinks.__all__) == sorted(
        [
            "CSV",
            "DEFAULT_GZIP_LEVEL",
            "FORMATS",
            "GZIP_CONTENT_TYPE",
            "JSON_LINES",
            "MANIFEST_NAME",
            "ApiDelivery",
            "PreconditionFailedError",
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
    )
    for name in connector.sinks.__all__:
        assert getattr(connector.sinks, name) is not None


@pytest.mark.parametrize(
    "module",
    [
        "_cells",
        "exceptions",
        "formats",
        "_gzip",
        "keys",
        "portal",
        "_portal_batches",
        "_portal_openapi",
        "_portal_retry",
        "_portal_session",
        "_portal_upload",
        "_portal_wire",
        "s3",
        "_s3_rules",
        "_s3_multipart",
        "_s3_objects",
        "sftp",
        "_sftp_connect",
        "_sftp_layout",
        "_sftp_session",
        "storage",
    ],
)
def test_every_module_declares_its_public_names(module: str) -> None:
    loaded = importlib.import_module(f"connector.sinks.{module}")
    assert loaded.__all__
    for name in loaded.__all__:
        assert getattr(loaded, name) is not None


def test_error_classes() -> None:
    assert issubclass(SinkConfigError, ConfigError)
    assert issubclass(EncodeError, TerminalError)
    assert issubclass(SinkConfigError, ValueError)
    assert issubclass(EncodeError, ValueError)


def test_portal_error_classes() -> None:
    from connector.errors import TransientError
    from connector.sinks import (
        PortalAuthError,
        PortalBackpressureError,
        PortalMismatchError,
        PortalRejectedError,
        PortalUnavailableError,
    )

    assert issubclass(PortalAuthError, PortalRejectedError)
    assert issubclass(PortalRejectedError, TerminalError)
    assert issubclass(PortalMismatchError, TerminalError)
    assert issubclass(PortalBackpressureError, PortalUnavailableError)
    assert issubclass(PortalUnavailableError, TransientError)
    assert PortalBackpressureError("slow down", retry_after=2.0).retry_after == 2.0
