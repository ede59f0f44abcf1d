"""Object keys: deterministic, one per entity per date, the manifest beside them, prefixes validated."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.model import ENTITY_NAMES
from connector.sinks import (
    CSV,
    JSON_LINES,
    MANIFEST_NAME,
    SinkConfigError,
    day_prefix,
    manifest_key,
    object_key,
)

DAY = dt.date(2026, 3, 8)


def test_keys_follow_the_documented_layout() -> None:
    assert object_key("carecloud/prod", DAY, "Claim", CSV) == "carecloud/prod/2026-03-08/Claim.csv.gz"
    assert object_key("carecloud", DAY, "EOP", JSON_LINES) == "carecloud/2026-03-08/EOP.jsonl.gz"
    assert manifest_key("carecloud", DAY) == "carecloud/2026-03-08/_manifest.json"
    assert day_prefix("carecloud", DAY) == "carecloud/2026-03-08/"


def test_an_empty_prefix_starts_at_the_root() -> None:
    assert object_key("", DAY, "Family", CSV) == "2026-03-08/Family.csv.gz"
    assert manifest_key("", DAY) == "2026-03-08/_manifest.json"


@pytest.mark.parametrize(
    "prefix",
    [
        "/carecloud",
        "carecloud/",
        "a//b",
        "..",
        "a/../b",
        "a/./b",
        ".hidden",
        "a b",
        "a\\b",
        "ünï",
        "a/\nb",
        "/",
    ],
)
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(SinkConfigError, match="prefix"):
        object_key(prefix, DAY, "Claim", CSV)
    with pytest.raises(SinkConfigError, match="prefix"):
        manifest_key(prefix, DAY)


def test_unknown_entities_and_datetimes_are_refused() -> None:
    with pytest.raises(SinkConfigError, match="unknown entity"):
        object_key("x", DAY, "Patient", CSV)
    with pytest.raises(SinkConfigError, match="date"):
        manifest_key("x", dt.datetime(2026, 3, 8, tzinfo=dt.UTC))


SEGMENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,12}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)
PREFIX = st.lists(SEGMENT, max_size=4).map("/".join)


@given(PREFIX, st.dates(dt.date(2000, 1, 1), dt.date(2100, 1, 1)))
def test_keys_are_deterministic_distinct_and_clean(prefix: str, day: dt.date) -> None:
    keys = [object_key(prefix, day, entity, fmt) for entity in ENTITY_NAMES for fmt in (CSV, JSON_LINES)]
    keys.append(manifest_key(prefix, day))
    assert len(set(keys)) == len(keys)
    assert keys == [object_key(prefix, day, e, f) for e in ENTITY_NAMES for f in (CSV, JSON_LINES)] + [
        manifest_key(prefix, day)
    ]
    for key in keys:
        assert key.startswith(day_prefix(prefix, day))
        assert not key.startswith("/")
        assert "//" not in key
        assert ".." not in key.split("/")
        assert key.split("/")[-2] == day.isoformat()
    assert keys[-1].endswith("/" + MANIFEST_NAME)
