"""The synthetic source database behind ``synthetic`` (private): its rows and how they change.

Each *unit* (one provider, or one family with its whole subtree of members, care episodes,
claims and payments) has its own history, drawn from a ``random.Random`` seeded by the run's
seed and the unit's name. Units never reference each other's rows except providers, which
children only reference when the provider is never deleted, so a unit's history is planned
alone and any number of units can be streamed in bounded memory, and re-planned identically
for the expected state. ``Unit`` is that database for one unit: it applies each change to
its rows (the truth the expected state is read from) and records it in the unit's ``Plan``.

Rows hold natural Python values (``date``, aware ``datetime`` with microseconds, ``Decimal``
at scale 2, ``dict`` for the jsonb ``address``); ``_synthetic_render`` writes them out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "CHURN_EVERY",
    "PK",
    "PLANS",
    "PROCEDURES",
    "T_SNAPSHOT",
    "Change",
    "Plan",
    "Row",
    "RowKey",
    "Unit",
]

Row = dict[str, Any]
RowKey = tuple[str, int]
"""(source table, primary key); ids are unique per table across all units."""

PK = {
    "family": "family_id",
    "provider": "provider_id",
    "family_member": "member_id",
    "care_episode": "episode_id",
    "claim": "claim_id",
    "payment": "payment_id",
}
T_SNAPSHOT = datetime(2024, 11, 19, 6, 0, tzinfo=UTC)
"""When the initial snapshot was taken: snapshot rows are older, streamed changes newer."""
CHURN_EVERY = 10
"""Providers whose id is a multiple of this are deleted (every other one re-created) and never
referenced, so no child ever points at a deleted provider."""

_SURNAMES = ("Okafor", "Lindqvist", "Haddad", "Nguyen", "García", "Kowalski", "Müller", "O'Brien")
_FIRST = ("Adaeze", "Chidi", "Astrid", "Björn", "Layla", "Omar", "Zoë", "Mateo", "Aiko", "Priya")
_STATES = ("CA", "NY", "TX", "WA", "MA", "IL", "FL", "OR")
PLANS = ("PPO-500", "PPO-1500", "HMO-250", "HDHP-3000", "EPO-1000")
_CARE_TYPES = ("PREVENTIVE", "PRIMARY_CARE", "SPECIALIST", "URGENT_CARE", "DENTAL", "TELEHEALTH")
_DIAGNOSES = ("Z00.00", "J06.9", "M54.5", "E11.9", "I10", "K02.9")
PROCEDURES = ("99213", "99214", "99395", "D1110", "99442")
_DENIALS = ("CO-50", "CO-97", "PR-204", "CO-16")


@dataclass(frozen=True, slots=True)
class Change:
    """One row change. ``row`` is the new row, or for a delete the old one (None: key only)."""

    table: str
    op: str
    pk: int
    row: Row | None
    toast: tuple[str, ...] = ()  # columns sent as Debezium's unchanged-TOAST placeholder


@dataclass
class Plan:
    """A unit's history: snapshot reads, then transactions (time key, changes) in commit order."""

    initial: list[Change] = field(default_factory=list)
    txs: list[tuple[float, list[Change]]] = field(default_factory=list)
    rereads: list[Change] = field(default_factory=list)  # stale re-snapshot reads, sent last
    final: dict[RowKey, Row] = field(default_factory=dict)  # the live rows at the end
    first: dict[RowKey, Row] = field(default_factory=dict)  # each row's first version


def cents(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2)


class Unit:
    """Builds one unit's ``Plan`` while keeping the unit's rows as the database would."""

    def __init__(self, seed: int, name: str, providers: int) -> None:
        self.rng = random.Random(f"carecloud-synthetic/{seed}/{name}")
        self.providers = providers
        self.rows: dict[RowKey, Row] = {}
        self.first: dict[RowKey, Row] = {}
        self.streamed: set[RowKey] = set()
        self.next_child: dict[RowKey, int] = {}
        self.plan = Plan()
        self.tx: list[Change] | None = None
        self.clock = T_SNAPSHOT + timedelta(seconds=self.rng.randrange(3600))

    # -- the database --------------------------------------------------------------------

    def stamp(self) -> datetime:
        if self.tx is None:  # a snapshot row: last changed some time before the snapshot
            return T_SNAPSHOT - timedelta(seconds=self.rng.randrange(1, 400 * 86400))
        return self.clock

    def begin(self) -> None:
        self.clock += timedelta(
            seconds=self.rng.randrange(60, 3 * 86400), microseconds=self.rng.randrange(10**6)
        )
        self.tx = []

    def commit(self) -> None:
        assert self.tx is not None
        if self.tx:
            self.plan.txs.append((self.clock.timestamp(), self.tx))
        self.tx = None

    def write(self, table: str, row: Row, toast: tuple[str, ...] = ()) -> None:
        key = (table, row[PK[table]])
        self.first.setdefault(key, row)
        if self.tx is None:
            self.plan.initial.append(Change(table, "r", key[1], row))
        else:
            self.tx.append(Change(table, "u" if key in self.rows else "c", key[1], row, toast))
            self.streamed.add(key)
        self.rows[key] = row

    def update(self, key: RowKey, toast: tuple[str, ...] = (), **values: Any) -> None:
        self.write(key[0], {**self.rows[key], **values, "updated_at": self.stamp()}, toast)

    def delete(self, key: RowKey) -> None:
        """Delete ``key`` and, as ``ON DELETE CASCADE`` would, every row that references it."""
        table, pk = key
        for child in [k for k, row in self.rows.items() if row.get(PK[table]) == pk and k != key]:
            if child in self.rows:
                self.delete(child)
        row = self.rows.pop(key)
        assert self.tx is not None
        full = self.rng.random() < 0.3  # REPLICA IDENTITY FULL sends the old row, DEFAULT the key
        self.tx.append(Change(table, "d", pk, row if full else None))

    def child_id(self, parent: RowKey) -> int | None:
        """Ids derive from the parent's (up to ten children each): no counter shared by units."""
        index = self.next_child.get(parent, 0)
        if index >= 10:
            return None
        self.next_child[parent] = index + 1
        return parent[1] * 10 + index

    def live(self, table: str) -> list[RowKey]:
        return [k for k in self.rows if k[0] == table]

    def pick(self, table: str, where: Callable[[Row], bool] = lambda _: True) -> RowKey | None:
        keys = [k for k in self.live(table) if where(self.rows[k])]
        return self.rng.choice(keys) if keys else None

    def finish(self, reread_tables: tuple[str, ...]) -> Plan:
        """Final rows, and a few stale re-snapshot reads of ``reread_tables``: only tables never
        sent with a TOAST placeholder, as an older read may fill a field a newer change left
        unavailable, and what a stale read should fill is not well defined. A stale read is a
        redelivered read of the initial snapshot (its LSN): only rows that snapshot read have
        one, as a read at a later LSN is a re-snapshot, which rightly wins (version.py)."""
        self.plan.final, self.plan.first = self.rows, self.first
        snapshotted = {(change.table, change.pk) for change in self.plan.initial}
        for key in sorted(self.streamed):
            if (
                key[0] in reread_tables
                and key in self.rows
                and self.rng.random() < 0.05
                and key in snapshotted
            ):
                self.plan.rereads.append(Change(key[0], "r", key[1], self.first[key]))
        return self.plan

    # -- row factories -------------------------------------------------------------------

    def address(self) -> dict[str, str]:
        return {"state": self.rng.choice(_STATES), "zip": f"{self.rng.randrange(10000, 100000)}"}

    def family(self, fid: int) -> None:
        r = self.rng
        status = r.choices("APST", (85, 6, 5, 4))[0]
        start = date(2023, 1, 1) + timedelta(days=r.randrange(700))
        self.write(
            "family",
            {
                "family_id": fid,
                "family_name": r.choice(_SURNAMES),
                "status": status,
                "plan_code": r.choice(PLANS),
                "coverage_start": start,
                "coverage_end": start + timedelta(days=365) if status == "T" else None,
                "address": self.address(),
                "email": f"family{fid}@example.org" if r.random() < 0.7 else None,
                "deductible": cents(r.randrange(5, 90) * 10_000),
                "oop_max": cents(r.randrange(20, 200) * 10_000) if r.random() < 0.9 else None,
                "updated_at": self.stamp(),
            },
        )

    def provider(self, pid: int) -> None:
        r = self.rng
        address = self.address()
        self.write(
            "provider",
            {
                "provider_id": pid,
                "npi": f"1{r.randrange(10**8, 10**9)}",
                "display_name": f"{r.choice(_SURNAMES)} {r.choice(('Clinic', 'Family Medicine', 'Dental'))}",
                "provider_type": r.choice(("MD", "NP", "DDS", "CLINIC", "HOSP")),
                "taxonomy_code": r.choice(("207Q00000X", "1223G0001X", None)),
                "in_network": r.random() < 0.8,
                "status": "A",
                "state_code": address["state"],
                "postal_code": address["zip"],
                "updated_at": self.stamp(),
            },
        )

    def member(self, family: RowKey, relationship: str) -> None:
        mid = self.child_id(family)
        if mid is None:
            return
        r = self.rng
        self.write(
            "family_member",
            {
                "member_id": mid,
                "family_id": family[1],
                "member_number": f"M{mid:010d}",
                "first_name": r.choice(_FIRST),
                "last_name": self.rows[family]["family_name"],
                "birth_date": date(1950, 1, 1) + timedelta(days=r.randrange(70 * 365)),
                "gender": r.choices("FMXU", (48, 48, 2, 2))[0],
                "relationship": relationship,
                "enrolled_on": self.rows[family]["coverage_start"],
                "terminated_on": None,
                "updated_at": self.stamp(),
            },
        )
        for _ in range(self.rng.choices((0, 1, 2, 3), (2, 4, 3, 1))[0]):
            self.care(("family_member", mid))

    def provider_ref(self) -> int:
        pid = self.rng.randrange(1, self.providers + 1)
        return pid - 1 if pid % CHURN_EVERY == 0 else pid

    def care(self, member: RowKey) -> None:
        eid = self.child_id(member)
        if eid is None:
            return
        r = self.rng
        start = date(2024, 1, 1) + timedelta(days=r.randrange(320))
        status = r.choice(("SCHEDULED", "IN_PROGRESS", "COMPLETED", "COMPLETED"))
        self.write(
            "care_episode",
            {
                "episode_id": eid,
                "member_id": member[1],
                "provider_id": self.provider_ref(),
                "care_type": r.choice(_CARE_TYPES),
                "status": status,
                "service_start": start,
                "service_end": start + timedelta(days=r.randrange(3)) if status == "COMPLETED" else None,
                "diagnosis_code": r.choice(_DIAGNOSES) if r.random() < 0.9 else None,
                "procedure_code": r.choice(PROCEDURES),
                "updated_at": self.stamp(),
            },
        )
        for _ in range(r.randint(1, 3)):
            self.claim(("care_episode", eid))

    def claim(self, care: RowKey, status: str | None = None, cid: int | None = None) -> None:
        cid = cid or self.child_id(care)
        if cid is None:
            return
        r = self.rng
        episode = self.rows[care]
        row = {
            "claim_id": cid,
            "episode_id": care[1],
            "provider_id": episode["provider_id"],
            "claim_number": f"C-{cid:012d}",
            "status": "SUBMITTED",
            "submitted_on": episode["service_start"] + timedelta(days=r.randrange(1, 20)),
            "billed": cents(r.randrange(2_000, 400_000)),
            "allowed": None,
            "paid": None,
            "member_owes": None,
            "denial_code": None,
            "updated_at": self.stamp(),
        }
        status = (
            status
            or r.choices(("SUBMITTED", "PENDING", "APPROVED", "PAID", "DENIED"), (25, 20, 10, 35, 10))[0]
        )
        self.write("claim", {**row, **self.adjudicate(row, status)})
        if status == "PAID":
            self.payment(("claim", cid))

    def adjudicate(self, row: Row, status: str) -> Row:
        """The claim's amounts once it reaches ``status`` (allowed = paid + member's share)."""
        out: Row = {"status": status}
        if status in ("APPROVED", "PAID"):
            allowed = int(row["billed"] * 100) * self.rng.randrange(50, 96) // 100
            owes = min(allowed, self.rng.choice((0, 2_000, 2_500, 4_000)))
            out |= {"allowed": cents(allowed), "member_owes": cents(owes)}
            out["paid"] = cents(allowed - owes) if status == "PAID" else None
        elif status == "DENIED":
            out |= {"allowed": cents(0), "paid": cents(0), "denial_code": self.rng.choice(_DENIALS)}
        return out

    def payment(self, claim: RowKey) -> None:
        pay_id = self.child_id(claim)
        if pay_id is None:
            return
        r, c = self.rng, self.rows[claim]
        method = r.choice(("ACH", "ACH", "CHECK", "VIRTUAL_CARD"))
        self.write(
            "payment",
            {
                "payment_id": pay_id,
                "claim_id": claim[1],
                "status": "ISSUED",
                "issued_on": c["submitted_on"] + timedelta(days=r.randrange(5, 40)),
                "payee": r.choices(("PROVIDER", "MEMBER"), (9, 1))[0],
                "method": method,
                "amount": c["paid"],
                "member_owes": c["member_owes"],
                "reference": f"{method}-{pay_id}" if r.random() < 0.8 else None,
                "updated_at": self.stamp(),
            },
        )
