"""The fuzzer's seeds: realistic messages of every wire format the ingest reads (private).

A mutation-based fuzzer finds what its seeds lead it to, so every seed is what a real
producer sends: the synthetic Debezium JSON stream of ``examples/mapping.yaml`` as it is
(``schemas.enable=false``) and schema-wrapped (the converter's default), some of it with the
``__debezium.oldkey``/``newkey`` headers of a primary-key change; the same rows as Debezium
Avro in Confluent's wire format (their schemas registered in the given registry, as
``AvroConverter`` registers them); native ``ChangeEnvelope`` messages of all six entities;
and the crafted poison messages of issue 16. Avro seeds keep their records and writer
schemas beside the bytes, so the mutations can change a value and encode it again.
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import fastavro
import orjson

from connector.devtools.debezium_schema import column_schemas, wrap, wrap_key
from connector.devtools.poison import poison_set
from connector.devtools.schema_registry import SchemaRegistryServer
from connector.devtools.synthetic import TABLES, generate
from connector.mapping import Mapper, parse_mapping
from connector.model import ENTITY_NAMES, ENVELOPE_NAME, encode, raw_schema
from connector.model.samples import sample_envelope

__all__ = ["AvroParts", "Corpus", "Message", "Seed", "build_corpus", "fuzz_mapping", "strip_logical"]

Kind = Literal["json", "wrapped", "avro", "native", "poison"]
JSON_PREFIX = "benefits.public."
AVRO_PREFIX = "benefits.avro."
NATIVE_TOPIC = "benefits.native.changes"
PLACEHOLDER = "__debezium_unavailable_value"
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message as the ingest receives it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def size(self) -> int:
        parts = [self.key or b"", self.value or b"", *(v or b"" for _, v in self.headers)]
        return sum(len(p) for p in parts)


@dataclass(frozen=True, slots=True)
class AvroParts:
    """An Avro seed's records and the schemas that encode them (logical types stripped, so
    the records hold the raw ints and bytes a converter writes); ids None: no frame (native)."""

    value: dict[str, Any]
    value_schema: Any
    value_id: int | None
    key: dict[str, Any] | None = None
    key_schema: Any = None
    key_id: int | None = None


@dataclass(frozen=True, slots=True)
class Seed:
    """A realistic message to mutate; ``name`` says where it came from, never what it holds."""

    name: str
    kind: Kind
    message: Message
    avro: AvroParts | None = None


@dataclass
class Corpus:
    """Every seed, by kind, and the registry ids the schema-id mutations choose among."""

    seeds: dict[Kind, list[Seed]] = field(default_factory=dict)
    schema_ids: list[int] = field(default_factory=list)
    key_docs: list[bytes] = field(default_factory=list)
    """JSON keys of every table, for the key headers a mutation adds."""

    WEIGHTS: ClassVar[dict[Kind, int]] = {"json": 40, "wrapped": 25, "avro": 20, "native": 13, "poison": 2}
    """How often each kind is mutated: JSON is most of the traffic, and the fast path's."""

    def pick(self, rng: random.Random) -> Seed:
        kinds = [k for k in self.WEIGHTS if self.seeds.get(k)]
        kind = rng.choices(kinds, [self.WEIGHTS[k] for k in kinds])[0]
        return rng.choice(self.seeds[kind])

    @property
    def topics(self) -> list[str]:
        return sorted({s.message.topic for s in self.all()})

    def all(self) -> list[Seed]:
        return [s for group in self.seeds.values() for s in group]


def fuzz_mapping(example: Path) -> str:
    """``example`` (``examples/mapping.yaml``) with an Avro topic per table and a native one:
    the tables map the same rows whichever format carries them."""
    extra = "".join(f"  {AVRO_PREFIX}{t}: {{format: debezium-avro}}\n" for t in TABLES)
    extra += f"  {NATIVE_TOPIC}: {{format: native-avro}}\n"
    text = example.read_text()
    if "topics:\n" not in text:
        raise ValueError(f"{example} has no top-level 'topics:' block")
    return text.replace("topics:\n", "topics:\n" + extra, 1)


def strip_logical(node: Any) -> Any:
    """A schema with its logical types renamed away, as the connector reads writer schemas:
    records then carry raw ints and bytes, which is what a mutation needs to reach."""
    if isinstance(node, dict):
        return {("x-logicalType" if k == "logicalType" else k): strip_logical(v) for k, v in node.items()}
    if isinstance(node, list):
        return [strip_logical(v) for v in node]
    return node


def avro_encode(schema: Any, record: Any, schema_id: int | None) -> bytes:
    """The record's Avro binary, framed (magic byte 0, 4-byte id) unless ``schema_id`` is None."""
    body = io.BytesIO()
    if schema_id is not None:
        body.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(body, schema, record)
    return body.getvalue()


def build_corpus(example: Path, registry: SchemaRegistryServer, *, scale: int, seed: int) -> Corpus:
    """The seeds for the mapping ``fuzz_mapping(example)``, registering the Avro schemas."""
    mapper = Mapper(parse_mapping(fuzz_mapping(example)))
    rng = random.Random(seed)
    events = [e for e in generate(scale, seed=seed) if e.value is not None]
    corpus = Corpus()
    corpus.key_docs = sorted({e.key for e in events})
    json_seeds, wrapped_seeds = [], []
    for i, e in enumerate(events):
        headers = _key_headers(e.key, e.value or b"", rng, corpus.key_docs)
        name = f"{e.topic} #{i}"
        json_seeds.append(Seed(name, "json", Message(e.topic, e.key, e.value, headers)))
        try:
            doc = orjson.loads(e.value or b"")
        except orjson.JSONDecodeError:
            continue  # a malformed event of the stream: kept above, unwrapped
        if isinstance(doc, dict):
            typed = column_schemas(mapper, e.topic)
            value = orjson.dumps(wrap(doc, typed))
            wrapped_headers = tuple((n, v and wrap_key(v, {})) for n, v in headers)
            wrapped_seeds.append(
                Seed(name, "wrapped", Message(e.topic, wrap_key(e.key, {}), value, wrapped_headers))
            )
    corpus.seeds["json"], corpus.seeds["wrapped"] = json_seeds, wrapped_seeds
    corpus.seeds["avro"] = _avro_seeds(mapper, events, registry, corpus)
    corpus.seeds["native"] = _native_seeds()
    corpus.seeds["poison"] = _poison_seeds(events)
    return corpus


def _key_headers(
    key: bytes, value: bytes, rng: random.Random, keys: Sequence[bytes]
) -> tuple[tuple[str, bytes | None], ...]:
    """A primary-key change's headers on one event in five: Debezium sends the old key with
    the create of the new one and the new key with the delete of the old one."""
    if rng.random() >= 0.2 or not key.startswith(b"{"):
        return ()
    other = rng.choice(keys)
    return (("__debezium.newkey" if b'"op":"d"' in value else "__debezium.oldkey", other),)


# -- Debezium Avro -----------------------------------------------------------------------------


def _column_type(column: str, values: Iterable[Any], typed: dict[str, dict[str, Any]]) -> Any:
    """The Avro type AvroConverter gives a column (Connect logical types as its attributes)."""
    connect = typed.get(column)
    if connect is not None:
        name = connect.get("name", "")
        if name == "org.apache.kafka.connect.data.Decimal":
            scale = int(connect["parameters"]["scale"])
            return {
                "type": "bytes",
                "scale": scale,
                "precision": 12,
                "connect.version": 1,
                "connect.parameters": {"scale": str(scale), "connect.decimal.precision": "12"},
                "connect.name": name,
                "logicalType": "decimal",
            }
        base = "int" if connect["type"] == "int32" else "long"
        return {"type": base, "connect.version": 1, "connect.name": name}
    sample = next((v for v in values if v is not None), "")
    if isinstance(sample, bool):
        return "boolean"
    if isinstance(sample, str) and sample.startswith("{"):  # a json/jsonb column: text, tagged
        return {"type": "string", "connect.version": 1, "connect.name": "io.debezium.data.Json"}
    return "long" if isinstance(sample, int) else "string"


def _envelope_schema(table: str, columns: dict[str, Any], pk: str) -> dict[str, Any]:
    ns = f"{AVRO_PREFIX}{table}"
    fields = [
        {"name": c, "type": t} if c == pk else {"name": c, "type": ["null", t], "default": None}
        for c, t in columns.items()
    ]

    def opt(name: str, t: str) -> dict[str, Any]:
        return {"name": name, "type": ["null", t], "default": None}

    source = [
        *({"name": n, "type": "string"} for n in ("version", "connector", "name")),
        {"name": "ts_ms", "type": "long"},
        opt("snapshot", "string"),
        {"name": "db", "type": "string"},
        opt("sequence", "string"),
        *({"name": n, "type": "string"} for n in ("schema", "table")),
        *(opt(n, "long") for n in ("txId", "lsn", "xmin")),
    ]
    block = [
        {"name": "id", "type": "string"},
        {"name": "total_order", "type": "long"},
        {"name": "data_collection_order", "type": "long"},
    ]
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": ns,
        "fields": [
            {"name": "before", "type": ["null", {"type": "record", "name": "Value", "fields": fields}]},
            {"name": "after", "type": ["null", "Value"], "default": None},
            {
                "name": "source",
                "type": {
                    "type": "record",
                    "name": "Source",
                    "namespace": "io.debezium.connector.postgresql",
                    "fields": source,
                },
            },
            {
                "name": "transaction",
                "type": ["null", {"type": "record", "name": "block", "namespace": "event", "fields": block}],
                "default": None,
            },
            {"name": "op", "type": "string"},
            opt("ts_ms", "long"),
        ],
        "connect.name": f"{ns}.Envelope",
    }


def _avro_row(row: dict[str, Any] | None, columns: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON converter row as AvroConverter writes it: base64 decimals become their bytes."""
    if row is None:
        return None
    out: dict[str, Any] = {}
    for column, avro_type in columns.items():
        value = row.get(column)
        if isinstance(avro_type, dict) and avro_type["type"] == "bytes" and isinstance(value, str):
            value = PLACEHOLDER.encode() if value == PLACEHOLDER else base64.b64decode(value)
        out[column] = value
    return out


def _avro_seeds(
    mapper: Mapper, events: Sequence[Any], registry: SchemaRegistryServer, corpus: Corpus
) -> list[Seed]:
    out: list[Seed] = []
    for table in TABLES:
        json_topic, topic = JSON_PREFIX + table, AVRO_PREFIX + table
        docs = []
        for e in events:
            if e.topic != json_topic:
                continue
            try:
                doc, key = orjson.loads(e.value), orjson.loads(e.key)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("after") or doc.get("before"), dict):
                docs.append((key, doc))
        if not docs:
            continue
        rows = [r for _, d in docs for r in (d.get("after"), d.get("before")) if isinstance(r, dict)]
        typed = column_schemas(mapper, json_topic)
        pk = next(iter(docs[0][0]))
        names = list(dict.fromkeys(c for r in rows for c in r))
        columns = {c: _column_type(c, (r.get(c) for r in rows), typed) for c in names}
        value_schema = _envelope_schema(table, columns, pk)
        key_schema = {
            "type": "record",
            "name": "Key",
            "namespace": topic,
            "fields": [{"name": pk, "type": "long"}],
        }
        value_id = registry.register(f"{topic}-value", value_schema)
        key_id = registry.register(f"{topic}-key", key_schema)
        corpus.schema_ids += [value_id, key_id]
        writer_value = fastavro.parse_schema(strip_logical(value_schema))
        writer_key = fastavro.parse_schema(key_schema)
        source_fields = [f["name"] for f in value_schema["fields"][2]["type"]["fields"]]
        for i, (key, doc) in enumerate(docs):
            try:
                record = {
                    "before": _avro_row(doc.get("before"), columns),
                    "after": _avro_row(doc.get("after"), columns),
                    "source": {**dict.fromkeys(source_fields), **(doc.get("source") or {})},
                    "transaction": doc.get("transaction"),
                    "op": doc.get("op"),
                    "ts_ms": doc.get("ts_ms"),
                }
                message = Message(
                    topic,
                    avro_encode(writer_key, key, key_id),
                    avro_encode(writer_value, record, value_id),
                )
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # a malformed event of the stream that no Avro record can carry
            parts = AvroParts(record, writer_value, value_id, key, writer_key, key_id)
            out.append(Seed(f"{topic} #{i}", "avro", message, parts))
    return out


# -- the native envelope -----------------------------------------------------------------------


def native_writer_schema() -> Any:
    """``ChangeEnvelope`` with the entity records inlined and logical types stripped."""
    envelope = raw_schema(ENVELOPE_NAME)
    for f in envelope["fields"]:
        if f["name"] == "Payload":
            f["type"] = [t if t == "null" else raw_schema(t.rpartition(".")[2]) for t in f["type"]]
    return fastavro.parse_schema(strip_logical(envelope))


def _native_seeds() -> list[Seed]:
    writer = native_writer_schema()
    out = []
    for entity in ENTITY_NAMES:
        for op, version in (("UPSERT", 1), ("UPSERT", 3), ("DELETE", 2), ("UPSERT", 2)):
            envelope = sample_envelope(entity, op, version=version)
            value = encode(ENVELOPE_NAME, envelope)
            raw = fastavro.schemaless_reader(io.BytesIO(value), writer, None, return_record_name=True)
            if not isinstance(raw, dict):  # pragma: no cover - a record schema reads as a dict
                raise TypeError("a ChangeEnvelope did not read as a record")
            key = str(envelope["EntityId"]).encode()
            parts = AvroParts(raw, writer, None)
            out.append(
                Seed(f"native {entity} {op} v{version}", "native", Message(NATIVE_TOPIC, key, value), parts)
            )
    return out


def _poison_seeds(events: Sequence[Any]) -> list[Seed]:
    family = next(
        e for e in events if e.topic == JSON_PREFIX + "family" and e.value and b'"op":"c"' in e.value
    )
    crafted = poison_set(
        family.key,
        family.value,
        family_id=9_000_000,
        state_row_limit=1_047_564,
        key_limit=65_536,
        message_limit=3_000_000,
        dlq_limit=1_048_588,
    )
    return [
        Seed(f"poison: {p.name}", "poison", Message(family.topic, p.key, p.value, tuple(p.headers)))
        for p in crafted
    ]
