"""The source stage: Kafka message -> ``ChangeEvent`` (the decode half; consuming is elsewhere).

``make_decoder(format, **options)`` gives a ``Decoder`` for ``debezium-json``,
``debezium-avro`` or ``native-avro``; every decoder returns a ``ChangeEvent`` (None for a
tombstone) and raises a ``DecodeError`` (bad input) or ``SchemaRegistryUnavailable``
(transient). ``Version`` orders the changes to one row (see ``version``).
"""

from connector.source._envelope import Placeholder
from connector.source.avro import DebeziumAvroDecoder, RegistrySchemas
from connector.source.debezium import DebeziumJsonDecoder
from connector.source.decoders import FORMATS, Decoder, Format, Headers, make_decoder
from connector.source.events import ChangeEvent, Op, Position, Transaction
from connector.source.exceptions import DecodeError, SchemaRegistryUnavailable, UnknownSchemaError
from connector.source.native import NativeEnvelopeDecoder
from connector.source.version import Version

__all__ = [
    "FORMATS",
    "ChangeEvent",
    "DebeziumAvroDecoder",
    "DebeziumJsonDecoder",
    "DecodeError",
    "Decoder",
    "Format",
    "Headers",
    "NativeEnvelopeDecoder",
    "Op",
    "Placeholder",
    "Position",
    "RegistrySchemas",
    "SchemaRegistryUnavailable",
    "Transaction",
    "UnknownSchemaError",
    "Version",
    "make_decoder",
]
