"""What changed since the last delivery: the digest, its comparison, and the change gate.

The digests' comparison is judged against a plain dict comparison of the two sets (an oracle
that shares no code with the digest files); the extension's comparison against this module's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.model import ENTITY_NAMES, REFERENCES, field_names
from connector.snapshot.checks import change_check
from connector.snapshot.digest import Changes, content_hash, diff_files, write_digest
from connector.snapshot.plan import make_plan

FIELDS = list(field_names("Family"))


def test_the_hash_reads_values_in_field_order_not_the_stored_key_order() -> None:
    values = {name: f"v{i}" for i, name in enumerate(FIELDS)}
    reversed_keys = dict(reversed(list(values.items())))
    assert content_hash(FIELDS, values) == content_hash(FIELDS, reversed_keys)
    assert content_hash(FIELDS, values) != content_hash(FIELDS, {**values, FIELDS[-1]: "other"})


def test_null_and_absent_hash_alike_and_unlike_an_empty_string() -> None:
    base = dict.fromkeys(FIELDS, "x")
    absent = {k: v for k, v in base.items() if k != FIELDS[1]}
    assert content_hash(FIELDS, absent) == content_hash(FIELDS, {**base, FIELDS[1]: None})
    assert content_hash(FIELDS, absent) != content_hash(FIELDS, {**base, FIELDS[1]: ""})
    assert content_hash(FIELDS, {**base, FIELDS[1]: 1}) != content_hash(FIELDS, {**base, FIELDS[1]: "1"})
    assert content_hash(FIELDS, {**base, FIELDS[1]: True}) != content_hash(FIELDS, {**base, FIELDS[1]: 1})


sets = st.dictionaries(
    st.text(min_size=1, max_size=4),
    st.fixed_dictionaries({FIELDS[0]: st.sampled_from(["a", "b", None]), FIELDS[1]: st.integers(0, 2)}),
    max_size=40,
)


def _digest(records: dict[str, dict[str, Any]], path: Path) -> Path:
    write_digest(sorted(records.items(), key=lambda kv: kv[0].encode()), FIELDS, path)
    return path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=sets, after=sets)
def test_the_comparison_counts_what_a_dict_comparison_counts(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    changes = diff_files(_digest(before, tmp_path / "a"), _digest(after, tmp_path / "b"), "2026-12-05")
    both = before.keys() & after.keys()
    expected = Changes(
        "2026-12-05",
        added=len(after.keys() - before.keys()),
        removed=len(before.keys() - after.keys()),
        changed=sum(1 for k in both if _norm(before[k]) != _norm(after[k])),
        unchanged=sum(1 for k in both if _norm(before[k]) == _norm(after[k])),
    )
    assert changes == expected
    assert changes.previous == len(before)


def _norm(values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(values.get(name) for name in FIELDS)


@pytest.mark.fastpath
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=sets, after=sets)
def test_the_extension_compares_as_the_reference(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: Any
) -> None:
    a, b = _digest(before, tmp_path / "a"), _digest(after, tmp_path / "b")
    compiled = diff_files(a, b, "d")
    monkeypatch.setattr("connector._fastpath.load_or_none", lambda: None)
    assert diff_files(a, b, "d") == compiled


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=pytest.mark.fastpath), False])
def test_a_damaged_digest_is_refused(tmp_path: Path, compiled: bool, monkeypatch: Any) -> None:
    if not compiled:
        monkeypatch.setattr("connector._fastpath.load_or_none", lambda: None)
    write_digest([("b", {}), ("a", {})], FIELDS, tmp_path / "bad")
    good = _digest({"a": {}}, tmp_path / "good")
    with pytest.raises(ValueError, match="increasing EntityId order"):
        diff_files(good, tmp_path / "bad", "d")
    (tmp_path / "cut").write_bytes(good.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        diff_files(good, tmp_path / "cut", "d")


# -- the change gate -------------------------------------------------------------------------


def test_a_jump_in_changed_or_removed_records_blocks_and_added_ones_do_not() -> None:
    assert not change_check("Claim", None).blocked  # first delivery: nothing to compare
    assert not change_check("Claim", Changes("d", 0, 0, 0, 0)).blocked  # empty last delivery
    assert not change_check("Claim", Changes("d", 10_000, 0, 0, 100)).blocked  # growth
    assert not change_check("Claim", Changes("d", 0, 20, 30, 50)).blocked  # exactly half: passes
    check = change_check("Claim", Changes("d", 0, 20, 31, 49))
    assert check.blocked
    assert check.exceeded
    assert check.churn_ratio == pytest.approx(0.51)
    # The same count, every EntityId moved: nothing "changed", all removed and added again.
    assert change_check("Claim", Changes("d", 100, 100, 0, 0)).blocked


def test_an_override_lifts_the_change_gate_and_says_so() -> None:
    check = change_check("Claim", Changes("d", 0, 0, 90, 10), 0.5, override=True)
    assert (check.exceeded, check.overridden, check.blocked) == (True, True, False)
    assert not change_check("Claim", Changes("d", 0, 0, 90, 10), 1.0).blocked  # 1.0: off


class Memory:
    """A cut's state in memory: one consistent record per entity (the plan's ``StateView``)."""

    def __init__(self) -> None:
        self.rows = {entity: {f"{entity}-1": self._values(entity)} for entity in ENTITY_NAMES}

    @staticmethod
    def _values(entity: str) -> dict[str, str]:
        return {ref.field: f"{ref.parent}-1" for ref in REFERENCES[entity]}

    def present(self, entity: str) -> set[str]:
        return set(self.rows[entity])

    def count(self, entity: str) -> int:
        return len(self.rows[entity])

    def candidates(self, entity: str, fields: Sequence[str]) -> Iterator[tuple[str, ...]]:
        for entity_id, values in self.rows[entity].items():
            yield (entity_id, *(values[name] for name in fields))

    def incomplete(self, entity: str) -> list[str]:
        return []


def test_an_entity_blocked_for_its_changes_blocks_its_children_until_overridden() -> None:
    asked: list[str] = []

    def changes(held: Mapping[str, frozenset[str]]) -> dict[str, Changes | None]:
        asked.extend(held)
        jump = Changes("2026-12-05", 0, 0, 1, 0)
        return {
            entity: jump if entity == "FamilyMember" else Changes("2026-12-05", 0, 0, 0, 1) for entity in held
        }

    plan = make_plan(Memory(), changes=changes, max_change_ratio=0.5)
    assert asked == list(ENTITY_NAMES)  # asked once, for every entity
    because = {p.entity: p.blocked_because for p in plan.entities}
    assert because["FamilyMember"] == "changed records beyond the allowed ratio"
    assert because["Family"] is None
    assert because["Provider"] is None
    for child in ("Care", "Claim", "EOP"):
        assert because[child] is not None, child
    assert {p.entity: p.changes for p in plan.entities}["FamilyMember"] == Changes("2026-12-05", 0, 0, 1, 0)
    assert any(check["blocked"] for check in plan.checks_json()["changes"])

    overridden = make_plan(Memory(), changes=changes, overrides=["FamilyMember"])
    assert all(p.blocked_because is None for p in overridden.entities)
