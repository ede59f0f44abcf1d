"""No entity is delivered with rows of two mappings (issue 20): both cut readers tally the
complete rows by mapping version alike, a mix blocks the entity (and its children) with the
versions as the reason, a single version, old or current, is delivered, and rows from before
versions are read as the registry's ``unversioned`` version."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from connector.model import ENTITY_NAMES
from connector.snapshot.mapping_check import check_mapping, wait_for_remap
from connector.snapshot.plan import make_plan
from connector.source.version import Version
from connector.state.codec import encode_row, state_key
from connector.state.mapping_registry import Registry
from connector.state.resolve import MIXED_MAPPING, StateRow
from tests.integration.snapshot_helpers import tree
from tests.unit.snapshot.test_compiled_cut import Msg, _load

pytestmark = pytest.mark.fastpath

CURRENT = dict.fromkeys(ENTITY_NAMES, "new000000000")


def _state(version_of: dict[str, str | None], tmp_path: Path):  # type: ignore[no-untyped-def]
    """A consistent two-family state whose rows' versions ``version_of(entity_id)`` says
    (default: the current one), a marker and an incomplete row that must not count."""
    out: list[Msg] = []
    n = 0
    for entity in ENTITY_NAMES:
        for entity_id, values in tree(2)[entity].items():
            mv = version_of.get(entity_id, CURRENT[entity])
            row = encode_row(StateRow(Version(1, 1, 0, 0, 0), False, values, mapping_version=mv))
            out.append(Msg(n % 2, n // 2, state_key(entity, entity_id), row))
            n += 1
    gone = StateRow(
        Version(1, 1, 0, 0, 0), True, {}, delete_floor=Version(1, 1, 0, 0, 0), mapping_version="old"
    )
    out.append(Msg(n % 2, n // 2, state_key("Family", "FAM-9"), encode_row(gone)))
    n += 1
    ends = {0: (n + 1) // 2, 1: n // 2}
    return _load([out[i : i + 7] for i in range(0, len(out), 7)], ends, tmp_path)


def test_both_readers_tally_alike_and_a_mix_blocks_the_entity_and_its_children(tmp_path: Path) -> None:
    ref, fast = _state({"CLM-0000001": "old000000000"}, tmp_path)
    with ref, fast:
        assert ref.mapping_versions("Claim") == fast.mapping_versions("Claim")
        assert ref.mapping_versions("Family") == fast.mapping_versions("Family")  # the marker: not counted
        checks = [check_mapping(reader, CURRENT, {}) for reader in (ref, fast)]
        assert checks[0] == checks[1]
        check = checks[0]
        assert check.mixed() == {"Claim"}
        assert check.older("Claim") == 1
        assert check.older("Family") == 0
        plans = [make_plan(reader, mapping=check) for reader in (ref, fast)]
    assert plans[0] == plans[1]
    because = {p.entity: p.blocked_because for p in plans[0].entities}
    assert because["Claim"] is not None
    assert "2 mapping versions" in because["Claim"]
    assert "old000000000: 1" in because["Claim"]
    assert because["EOP"] is not None  # a blocked parent blocks its children
    assert all(because[e] is None for e in ("Family", "Provider", "FamilyMember", "Care"))
    counts = plans[0].checks_json()["mapping"]
    assert counts["Claim"]["older"] == 1
    assert counts["Claim"]["mixed"] is True
    assert "CLM-0000001" not in str(plans[0].checks_json())


def test_overrides_never_deliver_a_mix(tmp_path: Path) -> None:
    ref, fast = _state({"CLM-0000001": "old000000000"}, tmp_path)
    with ref, fast:
        plan = make_plan(ref, mapping=check_mapping(ref, CURRENT, {}), overrides=list(ENTITY_NAMES))
    assert {p.entity: p.blocked_because is not None for p in plan.entities}["Claim"]


def test_one_version_old_or_current_is_delivered_and_unversioned_rows_resolve(tmp_path: Path) -> None:
    every_claim_old = dict.fromkeys(tree(2)["Claim"], "old000000000")
    (tmp_path / "a").mkdir()
    ref, fast = _state(every_claim_old, tmp_path / "a")
    with ref, fast:
        check = check_mapping(fast, CURRENT, {})
        assert check.mixed() == frozenset()
        assert check.older("Claim") == len(tree(2)["Claim"])  # reported, not blocked
    # Rows written before versions existed (one Family here, the rest current): the registry
    # says which version they are under.
    unversioned: dict[str, str | None] = {next(iter(tree(2)["Family"])): None}
    (tmp_path / "b").mkdir()
    ref, fast = _state(unversioned, tmp_path / "b")
    with ref, fast:
        assert check_mapping(fast, CURRENT, {"Family": CURRENT["Family"]}).mixed() == frozenset()
        mixed = check_mapping(fast, CURRENT, {"Family": "first0000000"})
        assert mixed.mixed() == {"Family"}
        assert mixed.older("Family") == 1
        assert check_mapping(ref, CURRENT, {}).versions["Family"]["unversioned"] == 1


def test_the_wait_policy_waits_for_the_pass_until_its_bound() -> None:
    now = [dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.UTC)]
    reads = [Registry(), Registry(), Registry()]
    reads[2].absorb(b"remap/0", b'{"versions": {}, "done": true, "counts": {}, "after": null, "left": 0}')

    def sleep(seconds: float) -> None:
        now[0] += dt.timedelta(seconds=seconds)

    bound = now[0] + dt.timedelta(minutes=5)
    found = iter(reads)
    assert (
        wait_for_remap(lambda: next(found), 1, until=bound, clock=lambda: now[0], sleep=sleep, poll_s=60)
        == []
    )
    assert now[0] == bound - dt.timedelta(minutes=3)  # two polls, then done
    never = wait_for_remap(Registry, 1, until=bound, clock=lambda: now[0], sleep=sleep, poll_s=60)
    assert never == [0]
    assert now[0] == bound  # gave up at the bound: the cut goes ahead, a mix is held


@pytest.mark.parametrize("every", [False, True], ids=["one", "every"])
def test_a_row_a_carry_labelled_mixed_blocks_its_entity_even_alone(tmp_path: Path, every: bool) -> None:
    """A row whose values a primary-key carry took from a row under another mapping version
    (``MIXED_MAPPING``) is a mix by itself: its entity is blocked, even when every one of its
    rows carries that label (one version only), and the reason says what happened."""
    claims = list(tree(2)["Claim"])
    ref, fast = _state(dict.fromkeys(claims if every else claims[:1], MIXED_MAPPING), tmp_path)
    with ref, fast:
        checks = [check_mapping(reader, CURRENT, {}) for reader in (ref, fast)]
        assert checks[0] == checks[1]
        check = checks[0]
        assert check.mixed() == {"Claim"}
        assert check.older("Claim") == (len(claims) if every else 1)
        plan = make_plan(fast, mapping=check, overrides=list(ENTITY_NAMES))
    because = {p.entity: p.blocked_because for p in plan.entities}
    assert because["Claim"] is not None
    assert "primary-key update carried" in because["Claim"]
    assert f"{MIXED_MAPPING}: {len(claims) if every else 1}" in because["Claim"]
    assert because["EOP"] is not None  # its children with it
    assert plan.checks_json()["mapping"]["Claim"]["mixed"] is True
