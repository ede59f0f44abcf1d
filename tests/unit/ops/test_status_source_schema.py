"""``status``'s source schema line (issue 20): the mapped columns the topics' newest messages say
are dropped or retyped, by table, column and the field that reads them; or why it was not checked."""

from __future__ import annotations

import datetime as dt

from connector.errors import TransientError
from connector.mapping.schema_check import SchemaProblem
from connector.ops.status import Status, format_status, gather_source_schemas, schedule_status
from connector.snapshot.schedule import Schedule


def _status() -> Status:
    return Status("g", schedule_status(Schedule(), dt.datetime(2026, 3, 8, 20, tzinfo=dt.UTC)))


def test_dropped_and_retyped_columns_are_listed_with_the_fields_that_read_them() -> None:
    status = _status()
    problems = [
        SchemaProblem("public.payment", "reference", "dropped", "EOP.PaymentReference"),
        SchemaProblem("public.provider", "in_network", "retyped", "Provider.InNetwork", "string"),
    ]
    gather_source_schemas(status, lambda: problems)
    assert (
        "source schema: 2 mapped column(s) no longer fit the mapping: public.payment.reference dropped "
        "(EOP.PaymentReference reads it); public.provider.in_network retyped to string "
        "(Provider.InNetwork reads it)"
    ) in format_status(status)
    assert status.as_json()["source_schema"]["problems"][1] == {
        "table": "public.provider",
        "column": "in_network",
        "problem": "retyped",
        "field": "Provider.InNetwork",
        "found": "string",
    }


def test_a_fitting_schema_and_an_unreadable_one_say_so() -> None:
    status = _status()
    gather_source_schemas(status, list)
    assert "source schema: every column the mapping reads is there" in format_status(status)

    def away() -> list[SchemaProblem]:
        raise TransientError("cannot read the source topics' newest messages")

    status = _status()
    gather_source_schemas(status, away)
    assert "source schema: not checked (TransientError: cannot read" in format_status(status)
    assert status.as_json()["source_schema"]["problems"] is None
