"""Mapping stage: a decoded source row becomes a CareCloud entity change with a stable EntityId."""

from connector.mapping.change import EntityChange
from connector.mapping.exceptions import MappingConfigError, MappingError, SchemaValidationError
from connector.mapping.mapper import Mapper
from connector.mapping.spec import FieldSpec, MappingSpec, TableSpec, TopicSpec, load_mapping, parse_mapping

__all__ = [
    "EntityChange",
    "FieldSpec",
    "Mapper",
    "MappingConfigError",
    "MappingError",
    "MappingSpec",
    "SchemaValidationError",
    "TableSpec",
    "TopicSpec",
    "load_mapping",
    "parse_mapping",
]
