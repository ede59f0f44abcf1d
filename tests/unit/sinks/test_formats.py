"""CSV and JSON Lines encodings, read back with the standard library; streaming gzip."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import itertools
import json
import random
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.model import ENTITY_NAMES, field_names, validate
from connector.model.samples import sample
from connector.sinks import CSV, FORMATS, JSON_LINES, EncodeError, SinkConfigError, gzip_chunks, neutralise
from connector.sinks._cells import encoders
from connector.sinks.formats import CHUNK_BYTES, GZIP_BLOCK

UTC = dt.UTC


def csv_rows(entity: str, records: list[dict[str, Any]]) -> list[list[str]]:
    text = b"".join(CSV.writer(entity).write_rows(records)).decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline="")))


def json_rows(entity: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    data = b"".join(JSON_LINES.writer(entity).write_rows(records))
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.decode("utf-8").split("\n")[:-1]]


def unneutralise(cell: str) -> str:
    """What docs/file-format.md tells a reader to do with a string cell."""
    return cell[1:] if cell.startswith("'") else cell


# --- formats -------------------------------------------------------------------------------------------


def test_formats_by_name() -> None:
    assert FORMATS == {"csv": CSV, "jsonl": JSON_LINES}
    assert (CSV.file_extension, CSV.content_type) == ("csv", "text/csv; charset=utf-8; header=present")
    assert (JSON_LINES.file_extension, JSON_LINES.content_type) == ("jsonl", "application/x-ndjson")


@pytest.mark.parametrize("entity", ENTITY_NAMES)
def test_csv_header_is_the_schema_field_order(entity: str) -> None:
    header, row = csv_rows(entity, [sample(entity)])
    assert tuple(header) == field_names(entity)
    assert len(row) == len(header)


def test_csv_of_the_sample_claim() -> None:
    data = b"".join(CSV.writer("Claim").write_rows([sample("Claim")]))
    assert data == (
        b"EntityId,CareId,ProviderId,ClaimNumber,Status,SubmittedDate,BilledAmount,AllowedAmount,PaidAmount,"
        b"MemberResponsibilityAmount,DenialReasonCode,UpdatedAt\r\n"
        b"clm-0001,car-0001,prv-0001,2024295000123,PAID,2024-10-22,245.00,182.37,152.37,30.00,,"
        b"2024-11-04T17:30:05.123Z\r\n"
    )


def test_jsonl_of_the_sample_provider() -> None:
    data = b"".join(JSON_LINES.writer("Provider").write_rows([sample("Provider")]))
    assert data == (
        b'{"EntityId":"prv-0001","Npi":"1234567893","DisplayName":"Harbor Pediatrics Group",'
        b'"ProviderType":"CLINIC","TaxonomyCode":"208000000X","InNetwork":true,"Status":"ACTIVE",'
        b'"StateCode":"MA","PostalCode":"02114","UpdatedAt":"2024-11-04T17:30:05.123Z"}\n'
    )


def test_booleans_dates_and_nulls_in_csv() -> None:
    provider = dict(sample("Provider"), InNetwork=False, TaxonomyCode=None)
    (_, row) = csv_rows("Provider", [provider])
    assert row[5] == "false"
    assert row[4] == ""
    member = dict(sample("FamilyMember"), BirthDate=dt.date(5, 1, 2))
    assert csv_rows("FamilyMember", [member])[1][5] == "0005-01-02"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (Decimal("-12.5"), "-12.50"),
        (Decimal("3000"), "3000.00"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("0.10"), "0.10"),
        (Decimal("1.230"), "1.23"),
        (Decimal("-0.00"), "0.00"),
        (Decimal("9999999999.99"), "9999999999.99"),
    ],
)
def test_decimals_are_exact_strings_at_the_scale(value: Decimal, cell: str) -> None:
    claim = dict(sample("Claim"), PaidAmount=value)
    assert csv_rows("Claim", [claim])[1][8] == cell
    assert json_rows("Claim", [claim])[0]["PaidAmount"] == cell


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (dt.datetime(2024, 1, 2, 3, 4, 5, 678999, tzinfo=UTC), "2024-01-02T03:04:05.678Z"),  # truncated
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05.000Z"),
        (
            dt.datetime(2026, 3, 8, 1, 59, 59, 999000, tzinfo=ZoneInfo("America/Los_Angeles")),
            "2026-03-08T09:59:59.999Z",
        ),
        (
            dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ZoneInfo("America/Los_Angeles")),
            "2026-11-01T09:30:00.000Z",
        ),
        (
            dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
            "2024-01-01T18:30:00.000Z",
        ),
    ],
)
def test_timestamps_are_utc_with_milliseconds(value: dt.datetime, text: str) -> None:
    family = dict(sample("Family"), UpdatedAt=value)
    assert csv_rows("Family", [family])[1][-1] == text
    assert json_rows("Family", [family])[0]["UpdatedAt"] == text


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-5", "'-5"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'quoted", "''quoted"),  # so a reader can always drop one leading quote
        ("a=b", "a=b"),
        ("", ""),
        ("O'Brien", "O'Brien"),
    ],
)
def test_formula_cells_are_neutralised(text: str, cell: str) -> None:
    assert neutralise(text) == cell
    assert csv_rows("Family", [dict(sample("Family"), FamilyName=text)])[1][1] == cell
    assert json_rows("Family", [dict(sample("Family"), FamilyName=text)])[0]["FamilyName"] == text


def test_negative_amounts_and_enums_are_never_neutralised() -> None:
    claim = dict(sample("Claim"), BilledAmount=Decimal("-245.00"), PaidAmount=Decimal("-0.01"))
    row = csv_rows("Claim", [claim])[1]
    assert (row[6], row[8]) == ("-245.00", "-0.01")


def test_json_tells_null_from_empty() -> None:
    family = dict(sample("Family"), StateCode="", PostalCode=None)
    record = json_rows("Family", [family])[0]
    assert (record["StateCode"], record["PostalCode"]) == ("", None)
    assert list(record) == list(field_names("Family"))


def test_missing_optional_fields_are_null_and_unknown_keys_are_not_written() -> None:
    family = sample("Family")
    del family["PrimaryEmail"]
    family["Extra"] = "x"
    assert json_rows("Family", [family])[0]["PrimaryEmail"] is None
    assert "Extra" not in json_rows("Family", [family])[0]


def test_empty_entity() -> None:
    assert csv_rows("EOP", []) == [list(field_names("EOP"))]
    assert b"".join(JSON_LINES.writer("EOP").write_rows([])) == b""


# --- round trips ----------------------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(list("=+-@\t\r\n',\" ;é漢😀a")), max_size=8),
)
MAYBE_TEXT = st.one_of(st.none(), TEXT)
AMOUNT = st.decimals(
    min_value=-(10**10) + 1, max_value=10**10 - 1, places=2, allow_nan=False, allow_infinity=False
)
INSTANT = st.datetimes(
    dt.datetime(1900, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds and adds the zone itself
    dt.datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Kolkata")]),
)


@st.composite
def families(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "EntityId": draw(TEXT),
        "FamilyName": draw(TEXT),
        "Status": draw(st.sampled_from(["UNKNOWN", "PENDING", "ACTIVE", "SUSPENDED", "TERMINATED"])),
        "PlanCode": draw(TEXT),
        "CoverageStartDate": draw(st.dates()),
        "CoverageEndDate": draw(st.one_of(st.none(), st.dates())),
        "StateCode": draw(MAYBE_TEXT),
        "PostalCode": draw(MAYBE_TEXT),
        "PrimaryEmail": draw(MAYBE_TEXT),
        "DeductibleAmount": draw(AMOUNT),
        "OutOfPocketMaximum": draw(st.one_of(st.none(), AMOUNT)),
        "UpdatedAt": draw(INSTANT),
    }


def millis(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)


@settings(max_examples=300)
@given(st.lists(families(), max_size=5))
def test_csv_reads_back_with_the_csv_module(records: list[dict[str, Any]]) -> None:
    for record in records:
        validate("Family", record)
    header, *rows = csv_rows("Family", records)
    assert len(rows) == len(records)
    for record, row in zip(records, rows, strict=True):
        cells = dict(zip(header, row, strict=True))
        for name in ("EntityId", "FamilyName", "PlanCode", "StateCode", "PostalCode", "PrimaryEmail"):
            assert unneutralise(cells[name]) == (record[name] or "")
        assert cells["Status"] == record["Status"]
        assert dt.date.fromisoformat(cells["CoverageStartDate"]) == record["CoverageStartDate"]
        assert cells["CoverageEndDate"] == (
            record["CoverageEndDate"].isoformat() if record["CoverageEndDate"] else ""
        )
        assert Decimal(cells["DeductibleAmount"]) == record["DeductibleAmount"]
        assert cells["DeductibleAmount"].lstrip("-").replace(".", "").isdigit()  # never an exponent
        assert cells["DeductibleAmount"][-3] == "."
        assert cells["UpdatedAt"].endswith("Z")
        assert dt.datetime.fromisoformat(cells["UpdatedAt"][:-1] + "+00:00") == millis(record["UpdatedAt"])


@settings(max_examples=200)
@given(st.lists(families(), max_size=5))
def test_jsonl_reads_back_with_the_json_module(records: list[dict[str, Any]]) -> None:
    decoded = json_rows("Family", records)
    assert len(decoded) == len(records)
    for record, line in zip(records, decoded, strict=True):
        assert list(line) == list(field_names("Family"))
        for name in ("EntityId", "FamilyName", "PlanCode", "StateCode", "PostalCode", "PrimaryEmail"):
            assert line[name] == record[name]  # no neutralisation, null stays null
        assert Decimal(line["DeductibleAmount"]) == record["DeductibleAmount"]
        assert dt.datetime.fromisoformat(line["UpdatedAt"][:-1] + "+00:00") == millis(record["UpdatedAt"])


# --- streaming ------------------------------------------------------------------------------------------


def endless_claims() -> Iterator[dict[str, Any]]:
    claim = sample("Claim")
    for i in itertools.count():
        yield dict(claim, EntityId=f"clm-{i}")


@pytest.mark.parametrize("fmt", [CSV, JSON_LINES])
def test_writers_stream_lazily_in_chunks(fmt: Any) -> None:
    chunks = list(itertools.islice(fmt.writer("Claim").write_rows(endless_claims()), 4))
    assert len(chunks) == 4  # an endless input still yields: nothing is collected first
    assert all(CHUNK_BYTES <= len(chunk) < CHUNK_BYTES + 1024 * 1024 for chunk in chunks[1:])


# --- errors name the field and row, never the value -------------------------------------------------------

CANARY = "CANARY-7f3a"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("DeductibleAmount", 1.5, "does not hold a value of its schema type"),
        ("DeductibleAmount", Decimal("1.234"), "has more than 2 decimal places"),
        ("DeductibleAmount", Decimal("NaN"), "does not hold a value of its schema type"),
        ("UpdatedAt", dt.datetime(2024, 1, 1), "is a timestamp without a time zone"),  # noqa: DTZ001
        (
            "CoverageStartDate",
            dt.datetime(2024, 1, 1, tzinfo=UTC),
            "does not hold a value of its schema type",
        ),
        ("PlanCode", None, "is null but required"),
        ("Status", "GONE", "is not a symbol of its enum"),
        ("FamilyName", 42, "does not hold a value of its schema type"),
        ("PrimaryEmail", "\ud800" + CANARY, "is not valid UTF-8"),
    ],
)
@pytest.mark.parametrize("fmt", [CSV, JSON_LINES])
def test_bad_values_stop_the_file_with_a_message_that_names_no_value(
    fmt: Any, field: str, value: Any, problem: str
) -> None:
    good = dict(sample("Family"), FamilyName=CANARY)
    bad = dict(good, **{field: value})
    with pytest.raises(EncodeError) as raised:
        b"".join(fmt.writer("Family").write_rows([good, bad]))
    assert str(raised.value) == f"Family.{field} in record 2 of the file {problem}"
    assert CANARY not in str(raised.value)


def test_schema_types_without_a_file_encoding_are_refused() -> None:
    from connector.sinks._cells import _encoder

    with pytest.raises(SinkConfigError, match=r"X\.f: type 'double'"):
        _encoder("X", "f", "double", True)
    with pytest.raises(SinkConfigError, match="nullable type"):
        _encoder("X", "f", ["null", "string", "long"], True)


def test_encoders_are_built_once_per_entity() -> None:
    assert encoders("Claim", for_csv=True) is encoders("Claim", for_csv=True)


# --- gzip -------------------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=3000), max_size=12), st.integers(0, 9))
def test_gzip_decompresses_to_the_same_bytes_for_any_chunking(chunks: list[bytes], level: int) -> None:
    data = b"".join(chunks)
    compressed = b"".join(gzip_chunks(chunks, level))
    assert gzip.decompress(compressed) == data
    assert compressed == b"".join(gzip_chunks([data], level))  # chunking does not change the bytes


def test_gzip_of_a_csv_file_and_of_nothing() -> None:
    records = list(itertools.islice(endless_claims(), 2500))
    plain = b"".join(CSV.writer("Claim").write_rows(records))
    assert gzip.decompress(b"".join(gzip_chunks(CSV.writer("Claim").write_rows(records), 1))) == plain
    assert gzip.decompress(b"".join(gzip_chunks([]))) == b""


def test_gzip_in_blocks_is_one_member_that_any_reader_takes_whatever_the_threads() -> None:
    """Several 1 MiB blocks deflated apart (pigz's way) still make one ordinary gzip member."""
    rng = random.Random(3)
    data = b"".join(
        b"%d,%s\r\n" % (i, rng.choice([b"alpha", b"beta", b"=x"]) * rng.randint(1, 9)) for i in range(400_000)
    )
    assert len(data) > 3 * GZIP_BLOCK
    one, two = (
        b"".join(gzip_chunks([data[i : i + 70_000] for i in range(0, len(data), 70_000)], 6, threads=n))
        for n in (1, 2)
    )
    assert one == two  # the bytes do not depend on the thread count
    assert gzip.decompress(two) == data
    assert zlib.decompressobj(31).decompress(two) == data  # one member: a single-member reader takes it all
    whole = zlib.compressobj(6, zlib.DEFLATED, 31)
    assert len(two) < 1.01 * len(whole.compress(data) + whole.flush())  # priming keeps the size


def test_gzip_header_has_no_time_or_name() -> None:
    compressed = b"".join(gzip_chunks([b"abc"]))
    assert compressed[:4] == b"\x1f\x8b\x08\x00"  # magic, deflate, no FNAME
    assert compressed[4:8] == b"\x00\x00\x00\x00"  # mtime 0: the same input gives the same bytes


@pytest.mark.parametrize("level", [-1, 10])
def test_gzip_level_outside_0_to_9_is_refused(level: int) -> None:
    with pytest.raises(SinkConfigError, match="gzip level"):
        list(gzip_chunks([b"x"], level))


# --- the reader's documentation ------------------------------------------------------------------------

FILE_FORMAT_DOC = Path(__file__).resolve().parents[3] / "docs" / "file-format.md"


@pytest.mark.parametrize("entity", ENTITY_NAMES)
def test_file_format_doc_lists_the_current_header(entity: str) -> None:
    header = b"".join(CSV.writer(entity).write_rows([])).decode().rstrip("\r\n")
    assert f"{entity}: {header}\n" in FILE_FORMAT_DOC.read_text(encoding="utf-8")


def test_file_format_doc_examples_are_what_the_writers_write() -> None:
    doc = FILE_FORMAT_DOC.read_text(encoding="utf-8")
    claim = b"".join(CSV.writer("Claim").write_rows([sample("Claim")])).decode().replace("\r\n", "\n")
    assert claim in doc
    provider = b"".join(JSON_LINES.writer("Provider").write_rows([sample("Provider")])).decode()
    assert provider in doc
