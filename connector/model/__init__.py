"""The entity model every stage shares: the Avro schemas and the codec that applies them.

``schemas`` loads the six CareCloud entity schemas and the change envelope once, and answers
questions about them (parsed schema, fingerprint, field order, associations). ``codec``
validates, encodes and decodes records with them. ``samples`` builds valid example records.
"""

from connector.model.codec import decode, encode, validate
from connector.model.exceptions import UnknownSchemaError
from connector.model.schemas import (
    ENTITY_NAMES,
    ENVELOPE_NAME,
    REFERENCES,
    SCHEMA_NAMES,
    Reference,
    field_names,
    fingerprint,
    raw_schema,
    schema,
)

__all__ = [
    "ENTITY_NAMES",
    "ENVELOPE_NAME",
    "REFERENCES",
    "SCHEMA_NAMES",
    "Reference",
    "UnknownSchemaError",
    "decode",
    "encode",
    "field_names",
    "fingerprint",
    "raw_schema",
    "schema",
    "validate",
]
