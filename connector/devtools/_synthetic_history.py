"""The history of each synthetic unit (private to ``synthetic``): what happens to its rows.

A provider is snapshotted, updated a few times, and (churn ids only) deleted and sometimes
re-created. A family is snapshotted (or enrolled while streaming) with its members, care,
claims and payments, then goes through one to five transactions drawn from ``_ACTIONS``
(claims advancing through adjudication dominate, as in a real benefits database), and a few
families leave (cascading to their subtree) and come back under the same id.
"""

from __future__ import annotations

from datetime import timedelta

from connector.devtools._synthetic_rows import CHURN_EVERY, PLANS, PROCEDURES, Plan, RowKey, Unit

__all__ = ["plan_family", "plan_provider"]


def plan_provider(seed: int, pid: int, providers: int) -> Plan:
    """A provider: in the initial snapshot, then a few updates; churn ids are deleted."""
    unit = Unit(seed, f"provider/{pid}", providers)
    unit.provider(pid)
    key = ("provider", pid)
    for _ in range(unit.rng.choices((0, 1, 2), (5, 3, 2))[0]):
        unit.begin()
        status = unit.rng.choices("AIS", (6, 3, 1))[0]
        unit.update(key, status=status, in_network=unit.rng.random() < 0.8)
        unit.commit()
    if pid % CHURN_EVERY == 0:
        unit.begin()
        unit.delete(key)
        unit.commit()
        if pid % (2 * CHURN_EVERY) == 0:  # the same key created again
            unit.begin()
            unit.provider(pid)
            unit.commit()
    return unit.finish(("provider",))


def plan_family(seed: int, fid: int, providers: int) -> Plan:
    """A family and its subtree: in the snapshot (or created while streaming), then changes."""
    unit = Unit(seed, f"family/{fid}", providers)
    fam = ("family", fid)
    if unit.rng.random() < 0.2:  # a family enrolled after the snapshot
        unit.begin()
    unit.family(fid)
    for index in range(unit.rng.randint(1, 4)):
        unit.member(fam, ("self", "spouse", "child", "child")[index])
    if unit.tx is not None:
        unit.commit()
    for _ in range(unit.rng.randint(1, 5)):
        unit.begin()
        _ACTIONS[unit.rng.choices(range(len(_ACTIONS)), _WEIGHTS)[0]](unit, fam)
        unit.commit()
    if unit.rng.random() < 0.03 and fam in unit.rows:  # the family leaves; half come back
        unit.begin()
        unit.delete(fam)
        unit.commit()
        if unit.rng.random() < 0.5:
            unit.begin()
            unit.family(fid)
            unit.member(fam, "self")
            unit.commit()
    return unit.finish(("family_member", "claim", "payment"))


def _family_update(unit: Unit, fam: RowKey) -> None:
    r = unit.rng
    if fam not in unit.rows:
        return
    if r.random() < 0.5:  # address unchanged: PostgreSQL sends the jsonb as unchanged TOAST
        unit.update(fam, ("address",), status=r.choices("APST", (7, 1, 1, 1))[0], plan_code=r.choice(PLANS))
    else:
        unit.update(fam, address=unit.address(), email=f"home{fam[1]}@example.net")


def _member_update(unit: Unit, fam: RowKey) -> None:
    key = unit.pick("family_member")
    if key is not None:
        row = unit.rows[key]
        unit.update(key, terminated_on=row["enrolled_on"] + timedelta(days=unit.rng.randrange(30, 700)))


def _member_add(unit: Unit, fam: RowKey) -> None:
    if fam in unit.rows:
        unit.member(fam, unit.rng.choice(("child", "dependent")))


def _care_update(unit: Unit, fam: RowKey) -> None:
    key = unit.pick("care_episode")
    if key is None:
        return
    row = unit.rows[key]
    end = row["service_start"] + timedelta(days=unit.rng.randrange(3))
    toast = ("diagnosis_code",) if row["diagnosis_code"] is not None and unit.rng.random() < 0.5 else ()
    unit.update(key, toast, status="COMPLETED", service_end=end, procedure_code=unit.rng.choice(PROCEDURES))


def _care_add(unit: Unit, fam: RowKey) -> None:
    key = unit.pick("family_member")
    if key is not None:
        unit.care(key)


def _claim_progress(unit: Unit, fam: RowKey) -> None:
    key = unit.pick("claim", lambda row: row["status"] in ("SUBMITTED", "PENDING", "APPROVED"))
    if key is None:
        care = unit.pick("care_episode")
        if care is not None:
            unit.claim(care, "SUBMITTED")
        return
    row = unit.rows[key]
    step = {"SUBMITTED": "PENDING", "APPROVED": "PAID"}.get(row["status"])
    step = step or unit.rng.choices(("APPROVED", "DENIED"), (4, 1))[0]
    unit.update(key, **unit.adjudicate(row, step))
    if step == "PAID":
        unit.payment(key)


def _payment_update(unit: Unit, fam: RowKey) -> None:
    key = unit.pick("payment", lambda row: row["status"] == "ISSUED")
    if key is not None:
        status = unit.rng.choices(("DELIVERED", "REISSUED"), (4, 1))[0]
        unit.update(key, status=status, reference=f"RE-{key[1]}" if status == "REISSUED" else None)


def _claim_delete(unit: Unit, fam: RowKey) -> None:
    key = unit.pick("claim")
    if key is None:
        return
    care = ("care_episode", unit.rows[key]["episode_id"])
    unit.delete(key)
    unit.commit()
    unit.begin()
    if unit.rng.random() < 0.5 and care in unit.rows:  # the same claim id entered again
        unit.claim(care, cid=key[1])


def _member_delete(unit: Unit, fam: RowKey) -> None:
    key = unit.pick("family_member", lambda row: row["relationship"] != "self")
    if key is not None:
        unit.delete(key)


_ACTIONS = (
    _family_update,
    _member_update,
    _member_add,
    _care_update,
    _care_add,
    _claim_progress,
    _payment_update,
    _claim_delete,
    _member_delete,
)
_WEIGHTS = (1.5, 1, 0.3, 2, 0.6, 5, 1, 0.4, 0.15)
