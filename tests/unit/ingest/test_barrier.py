"""The per-message barrier's one decision: which exceptions make a dead letter, and of what."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from connector.errors import ConfigError, DecodeError, MappingError, TransientError
from connector.ingest.barrier import INTERNAL_REASON, Cause, dead_letter_cause
from connector.state.exceptions import StateRowTooLargeError, StoreError


class PanicException(BaseException):
    """Stands in for ``pyo3_runtime.PanicException``, which is matched by name."""


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (DecodeError("value is not valid JSON", reason="invalid_json"), Cause("DecodeError", "invalid_json")),
        (MappingError("x", reason="required_field_null"), Cause("MappingError", "required_field_null")),
        (StateRowTooLargeError("too big"), Cause("StateRowTooLargeError", "state_row_too_large")),
        (TypeError("Recursion limit reached"), Cause("TypeError", INTERNAL_REASON)),
        (RecursionError("maximum recursion depth"), Cause("RecursionError", INTERNAL_REASON)),
        (KeyError("FAM-000017"), Cause("KeyError", INTERNAL_REASON)),
        (ValueError("binascii"), Cause("ValueError", INTERNAL_REASON)),
        (PanicException("index out of bounds"), Cause("PanicException", INTERNAL_REASON)),
    ],
)
def test_the_message_s_faults_are_dead_letters_named_by_class_never_by_text(
    exc: BaseException, cause: Cause
) -> None:
    assert dead_letter_cause(exc) == cause
    assert "FAM-000017" not in repr(dead_letter_cause(exc))


@pytest.mark.parametrize(
    "exc",
    [
        KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)),
        BufferError("Local: Queue full"),
        TransientError("registry away"),
        StoreError("volume full"),
        ConfigError("CARECLOUD_X is wrong"),
        OSError(28, "No space left on device"),
        MemoryError(),
        KeyboardInterrupt(),
        SystemExit(1),
    ],
)
def test_kafka_io_and_the_connector_s_own_errors_stay_the_loop_s_business(exc: BaseException) -> None:
    assert dead_letter_cause(exc) is None
