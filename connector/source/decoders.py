"""One interface over the three wire formats, chosen per topic by configuration.

The consumer loop and ``replay`` only ever see ``Decoder.decode``; ``make_decoder`` builds the
one a topic's ``format`` names. Options shared by several formats may be passed to any of
them and are ignored where they mean nothing (``replay`` passes ``unavailable_placeholder``
to every topic); an option no decoder knows is a ``ConfigError``, so a typo fails at start-up.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, get_args

from connector.errors import ConfigError
from connector.source._envelope import Headers
from connector.source.avro import DebeziumAvroDecoder
from connector.source.debezium import DebeziumJsonDecoder
from connector.source.events import ChangeEvent, Position
from connector.source.native import NativeEnvelopeDecoder

__all__ = ["FORMATS", "OPTIONS", "Decoder", "Format", "Headers", "make_decoder"]

Format = Literal["debezium-json", "debezium-avro", "native-avro"]
FORMATS: tuple[str, ...] = get_args(Format)
OPTIONS: dict[str, frozenset[str]] = {
    "debezium-json": frozenset({"unavailable_placeholder"}),
    "debezium-avro": frozenset(
        {"unavailable_placeholder", "schema_registry_url", "schema_registry_config", "schema_registry_client"}
    ),
    "native-avro": frozenset(),
}
"""The options each format uses; the union of all of them is what ``make_decoder`` accepts."""
_KNOWN = frozenset().union(*OPTIONS.values())


class Decoder(Protocol):
    """Turns one Kafka message into a ``ChangeEvent``.

    Returns None for a tombstone (null value). Raises a ``DecodeError`` (bad input: dead-letter
    it with its ``reason``) or a ``TransientError`` such as ``SchemaRegistryUnavailable``
    (retry; do not advance the offset). Messages of either never contain record values.
    """

    def decode(
        self, key: bytes | None, value: bytes | None, headers: Headers | None, position: Position
    ) -> ChangeEvent | None: ...


def make_decoder(format: Format, **options: Any) -> Decoder:
    """The decoder for ``format`` with the options that format uses (see ``OPTIONS``)."""
    if format not in OPTIONS:
        raise ConfigError(f"decoder format must be one of {', '.join(FORMATS)}")
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise ConfigError(f"unknown decoder option(s): {', '.join(unknown)}")
    used = {name: value for name, value in options.items() if name in OPTIONS[format]}
    if format == "debezium-json":
        return DebeziumJsonDecoder(**used)
    if format == "debezium-avro":
        if not used.get("schema_registry_url") and used.get("schema_registry_client") is None:
            raise ConfigError("debezium-avro needs schema_registry_url (or schema_registry_client)")
        return DebeziumAvroDecoder(**used)
    return NativeEnvelopeDecoder()
