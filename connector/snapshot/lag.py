"""Ingest lag before the cut, and whether to wait for it.

Lag is what upstream has published to the source topics that ingest has not yet committed
into the state: per source partition, its end offset minus the ingest group's committed
offset. The run measures it just before cutting and writes it into the manifest, so CareCloud
and the operator know how fresh the snapshot is. The policy (``CARECLOUD_SNAPSHOT_LAG_POLICY``)
says whether to wait for the lag to fall to ``max_lag_events`` or to cut at once; waiting is
bounded by ``wait_until`` (the deadline minus the run's expected duration), after which the run
cuts anyway and says so: a slightly stale full snapshot before the deadline beats none.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from connector.errors import TransientError
from connector.snapshot.cut import Cut, take_cut

log = logging.getLogger(__name__)

__all__ = ["Lag", "cut_when_caught_up", "lag_decision", "measure_lag"]

_TIMEOUT_S = 30.0
_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)
"""Answers that librdkafka does not mark retriable but that pass once the group's coordinator
is elected and loaded (a fresh cluster, a broker restart)."""


@dataclass(frozen=True, slots=True)
class Lag:
    """Events published to the source topics but not yet in the state, per partition."""

    partitions: dict[str, int] = field(default_factory=dict)
    """``"<topic>/<partition>"`` -> events behind."""
    waited_s: float = 0.0
    """How long the run waited for the lag to fall before cutting."""
    gave_up_waiting: bool = False
    """The wait bound was reached with the lag still above the threshold (or, with transaction
    tracking, with a source transaction below the cut still incomplete)."""
    incomplete_transactions: int | None = None
    """With transaction tracking: source transactions incomplete below the cut when it was
    taken (``connector.snapshot.transactions``); None when tracking is off."""

    @property
    def total(self) -> int:
        return sum(self.partitions.values())

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "total": self.total,
            "partitions": dict(sorted(self.partitions.items())),
            "waited_s": round(self.waited_s, 3),
            "gave_up_waiting": self.gave_up_waiting,
        }
        if self.incomplete_transactions is not None:
            body["incomplete_transactions"] = self.incomplete_transactions
        return body


def lag_decision(total: int, *, policy: str, max_lag: int, now: dt.datetime, wait_until: dt.datetime) -> str:
    """``go`` (cut now), ``wait`` (measure again shortly) or ``give_up`` (cut now, lag too high)."""
    if policy == "go" or total <= max_lag:
        return "go"
    return "wait" if now < wait_until else "give_up"


def measure_lag(base: dict[str, Any], group_id: str, topics: Iterable[str]) -> Lag:
    """The ingest group's lag on every partition of ``topics``, from the brokers' offsets.

    A partition the group has never committed counts from its start (0): nothing of it is
    in the state yet.
    """
    admin = AdminClient({k: v for k, v in base.items() if k != "error_cb"})
    try:
        meta = admin.list_topics(timeout=_TIMEOUT_S)
        partitions = [
            TopicPartition(topic, p)
            for topic in sorted(set(topics))
            for p in sorted(meta.topics[topic].partitions)
        ]
        ends_request = {tp: OffsetSpec.latest() for tp in partitions}  # type: ignore[no-untyped-call]
        ends = {
            (tp.topic, tp.partition): future.result(_TIMEOUT_S).offset
            for tp, future in admin.list_offsets(ends_request, request_timeout=_TIMEOUT_S).items()
        }
        committed = _committed(base, group_id, partitions)
    except (KafkaException, KeyError) as exc:
        raise TransientError(
            "cannot measure the ingest lag (source topic or group offsets unavailable)"
        ) from exc
    return Lag({f"{t}/{p}": max(end - committed.get((t, p), 0), 0) for (t, p), end in ends.items()})


def _committed(
    base: dict[str, Any], group_id: str, partitions: list[TopicPartition]
) -> dict[tuple[str, int], int]:
    """The group's committed offsets, read by a consumer that never subscribes (so never joins).

    Not ``AdminClient.list_consumer_group_offsets``: librdkafka (through 2.16) can crash the
    process when the coordinator answers NOT_COORDINATOR or "load in progress" to it
    (librdkafka issue #5040), which a broker restart or a fresh group provokes.
    """
    consumer = Consumer(
        {
            **{k: v for k, v in base.items() if k != "error_cb"},
            "group.id": group_id,
            "enable.auto.commit": False,
        }
    )
    deadline = time.monotonic() + _TIMEOUT_S
    try:
        while True:
            try:
                found = consumer.committed(partitions, _TIMEOUT_S)
                return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in found}
            except KafkaException as exc:
                # A fresh cluster has no offsets topic yet, and a coordinator may be loading:
                # both answer with a retriable error at once rather than after the timeout.
                err = exc.args[0]
                if not (err.retriable() or err.code() in _COORDINATOR_MOVING) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def cut_when_caught_up(
    base: dict[str, Any],
    *,
    state_topic: str,
    group_id: str,
    source_topics: Iterable[str],
    policy: str,
    max_lag: int,
    wait_until: dt.datetime,
    clock: Callable[[], dt.datetime],
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 5.0,
    incomplete: Callable[[Cut], tuple[int, int]] | None = None,
) -> tuple[Cut, Lag]:
    """Measure the lag, wait per ``policy`` (never past ``wait_until``), then take the cut.

    With ``incomplete`` (transaction tracking: how many source transactions below a cut are
    incomplete, and how many of those have their END below it too:
    ``snapshot.transactions.incomplete_below``), a cut inside a transaction is taken again
    after ``poll_s`` until none is, bounded by the same ``wait_until`` (whatever the lag
    policy: a transaction is never delivered half-applied); at the bound the cut goes ahead and
    the run holds those transactions' rows out. It goes ahead sooner when waiting cannot help:
    on two cuts in a row every incomplete transaction had its END in and nothing was left to
    ingest (Debezium writes the END after the transaction's events, so what is missing was
    dead-lettered or is of a table not consumed); one poll of grace covers events still in
    Debezium's producer when its END landed."""
    topics = sorted(set(source_topics))
    started = time.monotonic()
    stuck = 0
    while True:
        while True:
            lag = measure_lag(base, group_id, topics)
            decision = lag_decision(
                lag.total, policy=policy, max_lag=max_lag, now=clock(), wait_until=wait_until
            )
            if decision != "wait":
                break
            log.info("ingest lag %d event(s) above %d; waiting before the cut", lag.total, max_lag)
            sleep(poll_s)
        cut = take_cut(base, state_topic)
        open_transactions, ended = (None, 0) if incomplete is None else incomplete(cut)
        if not open_transactions:
            break
        stuck = stuck + 1 if ended == open_transactions and lag.total == 0 else 0
        if stuck >= 2:
            log.warning(
                "source transactions incomplete with their END in and nothing left to ingest: "
                "waiting cannot complete them; cutting, their rows held out",
                extra={"incomplete": open_transactions},
            )
            break
        if clock() >= wait_until:
            log.warning(
                "source transactions still incomplete at the wait bound; cutting anyway, their rows held out",
                extra={"incomplete": open_transactions},
            )
            decision = "give_up"
            break
        log.info(
            "source transactions incomplete below the cut; waiting to cut again",
            extra={"incomplete": open_transactions},
        )
        sleep(poll_s)
    if decision == "give_up" and not open_transactions:
        log.warning("ingest lag still %d event(s) at the wait bound; cutting anyway", lag.total)
    return cut, Lag(lag.partitions, time.monotonic() - started, decision == "give_up", open_transactions)
