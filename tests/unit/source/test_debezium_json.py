"""Debezium JSON decoding of the fixture messages: every shape Debezium 3.x emits for PG and MySQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.ingest.generations import Generations
from connector.source import ChangeEvent, DebeziumJsonDecoder, Op, Transaction
from connector.source.debezium import _Wrapped
from connector.source.version import NO_LAST_COMMIT, PHASE_SNAPSHOT, PHASE_STREAM, Version
from tests.unit.source.source_helpers import FIXTURES, fixture_doc, message, to_message

UTC = dt.UTC
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.json"))


def decode(
    name: str, decoder: DebeziumJsonDecoder | None = None, *, pretty: bool = False
) -> ChangeEvent | None:
    msg = message(name, pretty=pretty)
    return (decoder or DebeziumJsonDecoder()).decode(msg.key, msg.value, msg.headers, msg.position)


def events(*names: str, decoder: DebeziumJsonDecoder | None = None) -> list[ChangeEvent]:
    """Decode fixtures that are not tombstones."""
    decoded = [decode(name, decoder) for name in names]
    assert None not in decoded
    return [e for e in decoded if e is not None]


def decode_doc(doc: dict, decoder: DebeziumJsonDecoder | None = None) -> ChangeEvent | None:
    msg = to_message(doc)
    return (decoder or DebeziumJsonDecoder()).decode(msg.key, msg.value, msg.headers, msg.position)


def strip_schemas(doc: dict) -> dict:
    """The same message as a connector with ``schemas.enable=false`` would send it."""
    for part in ("key", "value"):
        if isinstance(doc[part], dict) and "payload" in doc[part]:
            doc[part] = doc[part]["payload"]
    return doc


def test_postgres_snapshot_read_is_typed_and_versioned_as_snapshot() -> None:
    event = decode("pg_read_snapshot_first.json")
    assert event is not None
    assert (event.table, event.op, event.key) == ("public.families", Op.READ, {"id": 1001})
    # Phase: twice the snapshot's LSN (its generation); a null last commit takes the LSN.
    assert event.version == Version(2 * 34389280, 34389280, 34389280, NO_LAST_COMMIT, 0)
    assert event.snapshot_end is None  # "first": the snapshot goes on
    assert event.row == {
        "id": 1001,
        "family_name": "Rivera",
        "status": "ACTIVE",
        "coverage_start": dt.date(2024, 1, 1),
        "deductible": Decimal("3000.00"),
        "balance": Decimal("-1250.125"),
        "enrolled_at": dt.datetime(2023, 12, 15, 9, 30, 0, 123456, tzinfo=UTC),
        "updated_at": dt.datetime(2024, 11, 4, 17, 30, 5, 123456, tzinfo=UTC),
        "notes": "Prefers paper statements.",
        "photo": "iVBORw0KGgo=",  # plain bytes column: base64 as sent, the mapper decides
        "tags": ["hsa", "paperless"],
    }
    assert event.unavailable == frozenset()
    assert event.source_ts_ms == 1730741400000
    assert event.transaction is None


def test_snapshot_rows_share_one_lsn_and_are_ordered_by_offset() -> None:
    first, last = events("pg_read_snapshot_first.json", "pg_read_snapshot_last.json")
    assert first.version[:4] == last.version[:4]
    assert first.version < last.version


def test_a_streamed_change_after_the_snapshot_outranks_its_reads_in_log_order() -> None:
    """The decoder writes generation 0; the ingest re-stamps a change with its partition's
    generation, which the snapshot's reads before it opened (connector.ingest.generations)."""
    read, create = events("pg_read_snapshot_first.json", "pg_create.json")
    assert create.version.phase == PHASE_STREAM
    generations = Generations()
    stamped = [generations.stamp("t", 0, e.version) for e in (read, create)]
    assert stamped[0] == read.version
    assert stamped[1].phase == 2 * 34389280 + 1
    assert stamped[0] < stamped[1]


def test_the_last_read_of_a_snapshot_names_its_source() -> None:
    last = decode("pg_read_snapshot_last.json")
    assert last is not None
    assert last.snapshot_end == "carecloud"  # source.name: the topic prefix


def test_postgres_create_carries_sequence_version_and_transaction() -> None:
    event = decode("pg_create.json")
    assert event is not None
    assert event.op is Op.CREATE
    assert event.version == Version(PHASE_STREAM, 34389280, 34389512, 0, 2)
    assert event.transaction == Transaction("779:34389512", 1, 1)


@pytest.mark.parametrize("strip", [False, True], ids=["with-schema", "schemaless"])
@pytest.mark.parametrize("sequence", [KeyError, None], ids=["sequence-absent", "sequence-null"])
def test_postgres_without_sequence_is_versioned_by_the_event_lsn(strip: bool, sequence: object) -> None:
    """Older Debezium versions send no ``source.sequence``: the event's own LSN orders it."""
    doc = fixture_doc("pg_create.json")
    source = doc["value"]["payload"]["source"]
    if sequence is KeyError:
        del source["sequence"]
    else:
        source["sequence"] = sequence
    event = decode_doc(strip_schemas(doc) if strip else doc)
    assert event is not None
    assert event.version == Version(PHASE_STREAM, 34389512, 0, 0, 2)


def test_transaction_id_suffix_plays_no_part_in_the_order() -> None:
    """PostgreSQL transaction ids are ``txId:lsn``, so they differ within one transaction; the
    version comes from ``source.sequence`` alone, the transaction block is carried as it is."""

    def update(lsn: int, offset: int, transaction: dict[str, object] | None) -> ChangeEvent:
        doc = fixture_doc("pg_create.json")
        payload = doc["value"]["payload"]
        payload["op"] = "u"
        payload["source"].update(txId=808, lsn=lsn, sequence=f'["34000","{lsn}"]')
        payload["transaction"] = transaction
        doc["offset"] = offset
        event = decode_doc(doc)
        assert event is not None
        return event

    def tx(suffix: int, order: int) -> dict[str, object]:
        return {"id": f"808:{suffix}", "total_order": order, "data_collection_order": order}

    later = update(34901, 0, tx(34901, 2))  # delivered first
    earlier = update(34567, 1, tx(34567, 1))
    assert (earlier.transaction, later.transaction) == (
        Transaction("808:34567", 1, 1),
        Transaction("808:34901", 2, 2),
    )
    assert earlier.version == Version(PHASE_STREAM, 34000, 34567, 0, 1)
    assert later.version == Version(PHASE_STREAM, 34000, 34901, 0, 0)
    assert earlier.version < later.version
    for swapped in (tx(34901, 2), None):
        assert update(34567, 1, swapped).version == earlier.version


def test_unchanged_toast_columns_are_removed_and_named() -> None:
    event = decode("pg_update_toast.json")
    assert event is not None
    assert event.op is Op.UPDATE
    assert event.unavailable == frozenset({"notes", "photo", "tags"})
    assert not {"notes", "photo", "tags"} & event.row.keys()
    assert event.row["status"] == "ACTIVE"


def test_unchanged_toast_without_schema() -> None:
    event = decode_doc(strip_schemas(fixture_doc("pg_update_toast.json")))
    assert event is not None
    assert event.unavailable == frozenset({"notes", "photo", "tags"})


def test_toast_placeholder_is_configurable() -> None:
    raw = (FIXTURES / "pg_update_toast.json").read_bytes()
    raw = raw.replace(b"__debezium_unavailable_value", b"__toast_unchanged__")
    doc = orjson.loads(raw)
    photo = doc["value"]["payload"]["after"]
    photo["photo"] = "X190b2FzdF91bmNoYW5nZWRfXw=="  # base64 of the custom placeholder
    custom = decode_doc(doc, DebeziumJsonDecoder(unavailable_placeholder="__toast_unchanged__"))
    assert custom is not None
    assert custom.unavailable == frozenset({"notes", "photo", "tags"})
    default = decode_doc(orjson.loads(orjson.dumps(doc)))
    assert default is not None
    assert default.unavailable == frozenset()
    assert default.row["notes"] == "__toast_unchanged__"


def test_toast_placeholder_as_int_array_and_hex_setting() -> None:
    doc = fixture_doc("pg_update_toast.json")
    after = doc["value"]["payload"]["after"]
    after["tags"] = list(b"__debezium_unavailable_value")  # int[] columns carry the bytes as ints
    event = decode_doc(doc)
    assert event is not None
    assert "tags" in event.unavailable
    hex_setting = "hex:" + b"__debezium_unavailable_value".hex()
    decoder = DebeziumJsonDecoder(unavailable_placeholder=hex_setting)
    event = decode_doc(fixture_doc("pg_update_toast.json"), decoder)
    assert event is not None
    assert event.unavailable == frozenset({"notes", "photo", "tags"})


def test_create_of_a_primary_key_update_carries_toast_placeholders_too() -> None:
    """The create is built from the UPDATE's new tuple, unchanged TOAST columns and all."""
    doc = fixture_doc("pg_pk_update_create.json")
    doc["value"]["payload"]["after"]["notes"] = "__debezium_unavailable_value"
    event = decode_doc(doc)
    assert event is not None
    assert event.unavailable == frozenset({"notes"})
    assert event.old_key == {"id": 1003}


def test_placeholder_is_plain_data_outside_postgresql() -> None:
    doc = fixture_doc("mysql_update.json")
    doc["value"]["payload"]["after"]["first_name"] = "__debezium_unavailable_value"
    event = decode_doc(doc)
    assert event is not None
    assert event.unavailable == frozenset()
    assert event.row["first_name"] == "__debezium_unavailable_value"


def test_delete_uses_before_which_may_hold_only_the_key() -> None:
    event = decode("pg_delete.json")
    assert event is not None
    assert event.op is Op.DELETE
    assert event.key == {"id": 1002}
    assert event.row["id"] == 1002
    assert {k for k, v in event.row.items() if v is not None and v != ""} == {"id"}


def test_delete_with_null_before_falls_back_to_the_key() -> None:
    doc = fixture_doc("pg_delete.json")
    doc["value"]["payload"]["before"] = None  # REPLICA IDENTITY NOTHING
    event = decode_doc(doc)
    assert event is not None
    assert event.row == {"id": 1002}


@pytest.mark.parametrize("name", ["pg_tombstone.json", "pg_pk_update_tombstone.json"])
def test_tombstone_is_none_not_a_second_delete(name: str) -> None:
    assert decode(name) is None


def test_null_json_value_is_a_tombstone_too() -> None:
    position = message("pg_create.json").position
    assert DebeziumJsonDecoder().decode(b'{"id":1}', b"null", None, position) is None


def test_primary_key_update_is_delete_tombstone_create_with_key_headers() -> None:
    decoder = DebeziumJsonDecoder()
    (delete,) = events("pg_pk_update_delete.json", decoder=decoder)
    assert decode("pg_pk_update_tombstone.json", decoder) is None
    (create,) = events("pg_pk_update_create.json", decoder=decoder)
    assert (delete.op, delete.key) == (Op.DELETE, {"id": 1003})
    assert (delete.new_key, delete.old_key) == ({"id": 2003}, None)
    assert (create.op, create.key) == (Op.CREATE, {"id": 2003})
    assert (create.old_key, create.new_key) == ({"id": 1003}, None)
    assert delete.version[:4] == create.version[:4]  # one UPDATE statement, one source position


def test_key_header_without_schema_wrapper() -> None:
    doc = fixture_doc("pg_pk_update_create.json")
    doc["headers"] = {"__debezium.oldkey": {"id": 1003}, "unrelated": "x"}
    event = decode_doc(doc)
    assert event is not None
    assert event.old_key == {"id": 1003}


def test_schemaless_values_stay_raw() -> None:
    event = decode("pg_create_schemaless.json")
    assert event is not None
    assert event.key == {"id": 1004}
    assert event.row["coverage_start"] == 19723
    assert event.row["deductible"] == "BJPg"
    assert event.row["balance"] == {"scale": 3, "value": "7Oyz"}


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_pretty_and_compact_bytes_decode_alike(name: str) -> None:
    assert decode(name, pretty=True) == decode(name)


@pytest.mark.parametrize("name", [n for n in ALL_FIXTURES if "tombstone" not in n and "schemaless" not in n])
def test_key_and_value_schemas_are_independent(name: str) -> None:
    """Four combinations of wrapped/bare key and value decode to the same key and key columns."""
    typed = decode(name)
    assert typed is not None
    for part in ("key", "value"):
        doc = fixture_doc(name)
        doc[part] = doc[part]["payload"]
        event = decode_doc(doc)
        assert event is not None
        assert event.key == typed.key


def test_cross_typing_when_only_one_side_has_a_schema() -> None:
    """A date primary-key column: the schema-less side is typed by the other side's plan."""
    doc = fixture_doc("pg_create.json")
    date_field = {"type": "int32", "optional": False, "name": "io.debezium.time.Date", "version": 1}
    doc["key"]["schema"]["fields"].append({**date_field, "field": "coverage_start"})
    doc["key"]["payload"]["coverage_start"] = 19723
    bare_key = fixture_doc("pg_create.json")
    bare_key["key"] = {"id": 1003, "coverage_start": 19723}
    bare_value = orjson.loads(orjson.dumps(doc))
    bare_value["value"] = bare_value["value"]["payload"]
    for variant in (doc, bare_key, bare_value):
        event = decode_doc(variant)
        assert event is not None
        assert event.key == {"id": 1003, "coverage_start": dt.date(2024, 1, 1)}


def test_mysql_snapshot_update_and_delete_positions() -> None:
    read, create, update, delete = events(
        "mysql_read_snapshot.json", "mysql_create.json", "mysql_update.json", "mysql_delete.json"
    )
    assert read.table == "claims.members"
    assert read.version == Version(PHASE_SNAPSHOT, 3, 157, 0, 0)
    assert update.version == Version(PHASE_STREAM, 3, 1988, 1, 2)
    assert delete.version == Version(PHASE_STREAM, 4, 4, 0, 3)
    assert read.version < create.version < update.version < delete.version
    assert read.row["birth_date"] == dt.date(2016, 5, 14)
    assert read.row["premium"] == Decimal("412.50")
    assert read.row["created_at"] == dt.datetime(2024, 1, 2, 8, 15, 30, 250000, tzinfo=UTC)
    assert read.row["updated_at"] == dt.datetime(2024, 11, 4, 17, 30, 5, tzinfo=UTC)
    assert update.row["premium"] == Decimal("433.10")
    assert delete.row["id"] == 501
    assert create.transaction == Transaction("file=mysql-bin.000003,pos=1391", 1, 1)


def test_ids_above_two_to_the_53_stay_exact_ints() -> None:
    big = 2**62 + 1
    for strip in (False, True):
        doc = fixture_doc("pg_create.json")
        doc["key"]["payload"]["id"] = big
        doc["value"]["payload"]["after"]["id"] = big
        event = decode_doc(strip_schemas(doc) if strip else doc)
        assert event is not None
        assert event.key == {"id": big}
        assert type(event.row["id"]) is int
        assert event.row["id"] == big


def test_schema_plans_are_cached_per_schema() -> None:
    decoder = DebeziumJsonDecoder()
    for name in ("pg_read_snapshot_first.json", "pg_create.json", "pg_update_toast.json", "pg_delete.json"):
        decode(name, decoder)
    assert len(decoder._values._cache) == 1
    decode("mysql_create.json", decoder)
    assert len(decoder._values._cache) == 2


def test_payload_key_inside_the_schema_block_falls_back_to_a_full_parse() -> None:
    doc = fixture_doc("pg_create.json")
    fields = doc["value"]["schema"]["fields"][1]["fields"]
    fields[2]["default"] = {"a": 1, "payload": 2}  # makes ',"payload":' appear inside the schema
    event = decode_doc(doc)
    assert event is not None
    assert event.row["coverage_start"] == dt.date(2024, 1, 1)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["payload", "schema", "a", ',"payload":', "b"]), children, max_size=4
        )
    ),
    max_leaves=12,
)


@given(schema=JSON_VALUES, payload=JSON_VALUES)
def test_split_parse_agrees_with_a_full_parse(schema: object, payload: object) -> None:
    """The schema/payload split either gives exactly what a full parse gives, or steps aside."""
    raw = orjson.dumps({"schema": schema, "payload": payload})
    wrapped = _Wrapped(lambda s: orjson.dumps(s))
    split = wrapped.fast(raw, "value")
    assert split is None or split == (payload, orjson.dumps(schema))
    assert wrapped.fast(raw, "value") == split  # the cached schema gives the same answer


def test_escaped_control_characters_are_fine() -> None:
    doc = fixture_doc("pg_create.json")
    doc["value"]["payload"]["after"]["notes"] = "line\u0001two\ttabbed\n"
    event = decode_doc(doc)
    assert event is not None
    assert event.row["notes"] == "line\u0001two\ttabbed\n"
