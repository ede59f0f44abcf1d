"""File or API per entity, and API batches that cover every record once within CareCloud's limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import ConfigError
from connector.snapshot.exceptions import SnapshotArgumentError, SnapshotConfigError
from connector.snapshot.routing import API_BATCH_LIMIT, DEFAULT_FILE_THRESHOLD, Route, api_batches, route_for


@pytest.mark.parametrize(
    ("count", "route"),
    [
        (0, Route.API),
        (1, Route.API),
        (4999, Route.API),
        (5000, Route.API),
        (5001, Route.FILE),
        (10**7, Route.FILE),
    ],
)
def test_more_than_5000_records_go_as_a_file(count: int, route: Route) -> None:
    assert route_for(count) is route


def test_the_threshold_is_configurable() -> None:
    assert route_for(11, file_threshold=10) is Route.FILE
    assert route_for(10, file_threshold=10) is Route.API
    assert route_for(1, file_threshold=0) is Route.FILE


def test_a_disabled_api_route_falls_back_to_files() -> None:
    assert route_for(3, api_enabled=False) is Route.FILE


def test_route_values_are_manifest_strings() -> None:
    assert [route.value for route in Route] == ["file", "api"]


def test_negative_counts_and_thresholds_are_refused() -> None:
    with pytest.raises(SnapshotArgumentError):
        route_for(-1)
    with pytest.raises(SnapshotConfigError):
        route_for(1, file_threshold=-1)


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.booleans())
def test_route_rule(count: int, threshold: int, api_enabled: bool) -> None:
    route = route_for(count, file_threshold=threshold, api_enabled=api_enabled)
    assert (route is Route.FILE) == (count > threshold or not api_enabled)


def test_batches_of_the_default_size() -> None:
    assert api_batches(2500) == [range(1000), range(1000, 2000), range(2000, 2500)]
    assert api_batches(1000) == [range(1000)]
    assert api_batches(1) == [range(1)]
    assert api_batches(0) == []


@pytest.mark.parametrize("size", [0, -1, API_BATCH_LIMIT + 1])
def test_batch_size_outside_careclouds_limit_is_refused(size: int) -> None:
    with pytest.raises(SnapshotConfigError, match="CareCloud's limit") as raised:
        api_batches(10, size)
    assert isinstance(raised.value, ConfigError)
    assert isinstance(raised.value, ValueError)


def test_negative_count_is_refused() -> None:
    with pytest.raises(SnapshotArgumentError):
        api_batches(-1)


def test_defaults_are_careclouds() -> None:
    assert (API_BATCH_LIMIT, DEFAULT_FILE_THRESHOLD) == (1000, 5000)


@given(st.integers(0, DEFAULT_FILE_THRESHOLD * 3), st.integers(1, API_BATCH_LIMIT))
def test_batches_cover_every_record_once_in_order(count: int, size: int) -> None:
    batches = api_batches(count, size)
    assert [i for batch in batches for i in batch] == list(range(count))
    assert all(1 <= len(batch) <= size <= API_BATCH_LIMIT for batch in batches)
    assert all(len(batch) == size for batch in batches[:-1])  # full except the last
    assert len(batches) == -(-count // size)
    assert api_batches(count, size) == batches  # deterministic: a retry sends the same records


@given(
    count=st.integers(0, 20_000),
    threshold=st.integers(0, 10_000),
    lower_share=st.floats(0, 1),
    previous=st.sampled_from([None, Route.FILE, Route.API]),
)
def test_hysteresis_keeps_a_file_a_file_down_to_the_lower_bound_and_never_uses_the_api_above_the_threshold(
    count: int, threshold: int, lower_share: float, previous: Route | None
) -> None:
    lower = int(threshold * lower_share)
    route = route_for(count, file_threshold=threshold, previous=previous, api_return_below=lower)
    if count > threshold:
        assert route is Route.FILE  # CareCloud's rule, whatever came before
    elif previous is Route.FILE and count >= lower:
        assert route is Route.FILE  # stays a file while it hovers near the threshold
    else:
        assert route is Route.API
    assert route is route_for(count, file_threshold=threshold) or previous is Route.FILE


def test_an_entity_hovering_around_5000_stays_a_file_until_it_falls_below_4500() -> None:
    routes, previous = [], None
    for count in (5001, 4999, 4600, 5000, 4499, 4999, 5001):
        previous = route_for(count, previous=previous, api_return_below=4500)
        routes.append(previous.value)
    assert routes == ["file", "file", "file", "file", "api", "api", "file"]


def test_a_lower_bound_above_the_threshold_is_refused() -> None:
    with pytest.raises(SnapshotConfigError):
        route_for(10, file_threshold=100, api_return_below=101)
