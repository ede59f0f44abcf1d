"""Encoding a set into Portal batches, and the client's argument checks (private to ``portal``).

Records become JSON values through the file formats' own encoders (``_cells``), then canonical
JSON (``_portal_wire``): the bytes of a batch, its checksum and its share of the set checksum all
come from one encoding. A record that cannot be encoded is an ``EncodeError`` naming the entity,
the field and the record's position in the set, never the value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from connector.model import ENTITY_NAMES
from connector.sinks._cells import Encoder, RuleError, encoders
from connector.sinks._portal_wire import MAX_BATCH_RECORDS, Checksum, canonical, checksum_of
from connector.sinks.exceptions import EncodeError, PortalMismatchError, SinkConfigError

__all__ = ["Batch", "check_delivery", "check_settings", "encode_batches", "set_checksum"]

_SNAPSHOT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch: its sequence number (from 1), records as canonical JSON, and their checksum."""

    sequence: int
    lines: list[bytes]
    checksum: str


def encode_batches(
    entity: str, records: Iterable[Mapping[str, Any]], count: int, batch_size: int, total: Checksum
) -> Iterator[Batch]:
    """Encode lazily, ``batch_size`` records at a time, feeding every record to ``total``.

    Raises ``PortalMismatchError`` as soon as there are more records than ``count``, and at the end
    if there were fewer; at most one batch is held in memory here.
    """
    field_encoders = encoders(entity, for_csv=False)
    iterator = iter(records)
    seen = 0
    sequence = 0
    while chunk := list(islice(iterator, batch_size)):
        sequence += 1
        lines = [_encode(entity, field_encoders, record, seen + i) for i, record in enumerate(chunk)]
        seen += len(lines)
        if seen > count:
            raise PortalMismatchError(f"{entity}: more records than the count of {count} given")
        for line in lines:
            total.add(line)
        yield Batch(sequence, lines, checksum_of(lines))
    if seen != count:
        raise PortalMismatchError(f"{entity}: {seen} records, but the count given was {count}")


def set_checksum(entity: str, records: Iterable[Mapping[str, Any]]) -> tuple[int, str]:
    """``(count, checksum)`` of ``entity`` records as the Portal computes them at commit.

    For checks outside the client: the expected state's checksum can be compared with the one
    an ``ApiDelivery`` (or the manifest) records without talking to the Portal.
    """
    field_encoders = encoders(entity, for_csv=False)
    total = Checksum()
    count = 0
    for count, record in enumerate(records, start=1):
        total.add(_encode(entity, field_encoders, record, count - 1))
    return count, total.hexdigest()


def _encode(
    entity: str, field_encoders: tuple[tuple[str, Encoder], ...], record: Mapping[str, Any], index: int
) -> bytes:
    try:
        return canonical({name: encode(record.get(name)) for name, encode in field_encoders})
    except (TypeError, ValueError, ArithmeticError, AttributeError):  # orjson's error is a TypeError
        pass
    where = f"record {index + 1} of the set"
    for name, encode in field_encoders:  # find the field, outside the except block: nothing chained
        try:
            value = encode(record.get(name))
            if isinstance(value, str):
                value.encode("utf-8")
        except RuleError as exc:
            raise EncodeError(f"{entity}.{name} in {where} {exc}") from None
        except UnicodeEncodeError:
            raise EncodeError(f"{entity}.{name} in {where} is not valid UTF-8") from None
        except TypeError:
            raise EncodeError(
                f"{entity}.{name} in {where} does not hold a value of its schema type"
            ) from None
        except (ValueError, ArithmeticError, AttributeError):
            raise EncodeError(f"{entity}.{name} in {where} cannot be encoded (out of range)") from None
    raise EncodeError(f"{entity}: {where} cannot be encoded")  # pragma: no cover


def check_settings(
    base_url: str,
    api_key: str,
    batch_size: int,
    max_concurrency: int,
    max_attempts: int,
    deadline: dt.datetime | None,
    timeout: float,
) -> None:
    problems = []
    if not base_url.startswith(("http://", "https://")):
        problems.append("base_url must be an http(s) URL")
    if not api_key:
        problems.append("api_key must not be empty")
    if not 1 <= batch_size <= MAX_BATCH_RECORDS:
        problems.append(f"batch_size must be between 1 and {MAX_BATCH_RECORDS} (CareCloud's limit)")
    if max_concurrency < 1 or max_attempts < 1 or timeout <= 0:
        problems.append("max_concurrency, max_attempts and timeout must be positive")
    if deadline is not None and deadline.utcoffset() is None:
        problems.append("deadline must be timezone-aware")
    if problems:
        raise SinkConfigError("Portal client: " + "; ".join(problems))


def check_delivery(entity: str, count: int, snapshot_id: str) -> None:
    if entity not in ENTITY_NAMES:
        raise SinkConfigError(f"unknown entity {entity!r}: expected one of {', '.join(ENTITY_NAMES)}")
    if count < 0:
        raise SinkConfigError("count must not be negative")
    if not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise SinkConfigError("snapshot_id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
