"""The sweep's records and decision (``connector.state.sweep``), pure."""

from __future__ import annotations

from connector.state.sweep import (
    Completion,
    completion_key,
    decode_completion,
    encode_completion,
    encode_position,
    position_key,
    sweep_plan,
    sweep_report,
)

TOPICS = {"pg.s.family": {0: 10, 1: 0, 2: 7}, "pg.s.claim": {0: 3, 1: 4, 2: 0}}


def _completion(generation: int = 500) -> tuple[bytes, bytes]:
    done = Completion("pg", generation, TOPICS, ("Claim", "Family"))
    return completion_key("pg", 0), encode_completion(done)


def _positions(**behind: int) -> list[tuple[bytes, bytes]]:
    """Every source partition consumed to its end, but ``behind`` ("<table><partition>": n)."""
    return [
        (position_key(topic, p), encode_position(end - behind.get(f"{topic.rsplit('.', 1)[1]}{p}", 0)))
        for topic, parts in TOPICS.items()
        for p, end in parts.items()
    ]


def test_a_completion_round_trips() -> None:
    key, value = _completion()
    assert key == b"~snapshot/pg/0"
    assert decode_completion(key, value) == Completion("pg", 500, TOPICS, ("Claim", "Family"))
    assert position_key("pg.s.family", 2) == b"~pos/pg.s.family/2"


def test_caught_up_positions_sweep_the_sources_entities() -> None:
    plan = sweep_plan([_completion(), *_positions()])
    assert plan.generations == {"Claim": 500, "Family": 500}
    assert plan.waiting == {}
    assert sweep_report(plan, {"Claim": 2, "Family": 0}) == {
        "generations": {"Claim": 500, "Family": 500},
        "waiting": {},
        "swept": {"Claim": 2},
    }


def test_a_partition_behind_its_end_offset_holds_the_whole_source_back() -> None:
    plan = sweep_plan([_completion(), *_positions(family2=1)])
    assert plan.generations == {}
    assert plan.waiting == {"pg": 1}


def test_no_position_yet_counts_as_behind_but_an_empty_partition_does_not() -> None:
    positions = [p for p in _positions() if p[0] != position_key("pg.s.claim", 0)]
    assert sweep_plan([_completion(), *positions]).waiting == {"pg": 1}
    empty = [p for p in _positions() if p[0] != position_key("pg.s.claim", 2)]  # end 0: nothing to read
    assert sweep_plan([_completion(), *empty]).generations == {"Claim": 500, "Family": 500}


def test_without_a_completion_nothing_is_swept() -> None:
    plan = sweep_plan(_positions())
    assert plan.generations == {}
    assert plan.waiting == {}


def test_the_newest_generation_of_a_source_wins_whichever_partition_holds_it() -> None:
    older = Completion("pg", 300, TOPICS, ("Claim",))
    newer = Completion("pg", 500, TOPICS, ("Claim", "Family"))
    records = [
        (completion_key("pg", 2), encode_completion(older)),
        (completion_key("pg", 0), encode_completion(newer)),
        *_positions(),
    ]
    assert sweep_plan(records).generations == {"Claim": 500, "Family": 500}
    assert sweep_plan(reversed(records)).generations == {"Claim": 500, "Family": 500}
