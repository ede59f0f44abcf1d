"""JSON logs: one parseable object per line, context by allow-list, canaries and secrets never out."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from connector.config.settings import KafkaSettings
from connector.errors import MappingError
from connector.ops.logs import configure_logging, log_context, register_secret

CANARY_ID = "FAM-CANARY-7f3a9"
CANARY_NAME = "Zebulon Canaryfield"
CANARY_AMOUNT = "98765.4321"
CANARIES = (CANARY_ID, CANARY_NAME, CANARY_AMOUNT)


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    """configure_logging sets process-wide levels; put them back for the rest of the suite."""
    names = ("", "botocore", "boto3", "urllib3", "paramiko", "httpx", "httpcore")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging("DEBUG", "json", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_one_json_object_with_the_core_fields(out: io.StringIO) -> None:
    log = logging.getLogger("connector.test")
    log.info(
        "batch committed", extra={"topic": "db.public.claim", "partition": 3, "offset": 41, "events": 5000}
    )
    log.debug("second line")
    first, second = _lines(out)
    assert set(first) == {"ts", "level", "logger", "msg", "topic", "partition", "offset", "events"}
    assert first["level"] == "INFO"
    assert first["logger"] == "connector.test"
    assert first["msg"] == "batch committed"
    assert str(first["ts"]).endswith("Z")
    assert (first["partition"], first["offset"]) == (3, 41)
    assert second["msg"] == "second line"


def test_fields_not_on_the_allow_list_never_reach_the_output(out: io.StringIO) -> None:
    log = logging.getLogger("connector.test")
    log.warning(
        "dead letter",
        extra={
            "entity_id": CANARY_ID,
            "record": {"FamilyName": CANARY_NAME, "DeductibleAmount": CANARY_AMOUNT},
            "payload": CANARY_NAME,
            "entity": CANARY_ID,  # allowed name, but only an entity type name is an allowed value
            "offset": [CANARY_AMOUNT],  # allowed name, but not a scalar
            "reason": "missing_row",
        },
    )
    text = out.getvalue()
    for canary in CANARIES:
        assert canary not in text
    (line,) = _lines(out)
    assert line["reason"] == "missing_row"
    assert line["dropped"] == ["entity", "entity_id", "offset", "payload", "record"]


def test_log_context_adds_fields_to_this_block_only(out: io.StringIO) -> None:
    log = logging.getLogger("connector.test")
    with log_context(topic="db.public.care", partition=1, phase="deliver", entity="Care"):
        log.info("inside", extra={"offset": 9})
        with log_context(partition=2, customer=CANARY_NAME):
            log.info("nested")
        worker = threading.Thread(target=lambda: log.info("other thread"))
        worker.start()
        worker.join()
    log.info("outside")
    inside, nested, other, outside = _lines(out)
    assert (inside["topic"], inside["partition"], inside["offset"], inside["entity"]) == (
        "db.public.care",
        1,
        9,
        "Care",
    )
    assert nested["partition"] == 2
    assert nested["dropped"] == ["customer"]
    assert "topic" not in other, "a context leaked into another thread"
    assert "topic" not in outside
    assert CANARY_NAME not in out.getvalue()


def test_exceptions_keep_type_and_stack_but_only_connector_messages(out: io.StringIO) -> None:
    log = logging.getLogger("connector.test")
    states: dict[str, int] = {}
    try:
        states[CANARY_ID]
    except KeyError:
        log.exception("lookup failed")
    try:
        raise MappingError("Family: primary-key column family_id is missing", reason="missing_primary_key")
    except MappingError:
        log.exception("mapping failed")
    lookup, mapping = _lines(out)
    assert lookup["exc_type"] == "KeyError"
    assert "exc_message" not in lookup
    assert "test_exceptions_keep_type_and_stack" in str(lookup["stack"])
    assert CANARY_ID not in out.getvalue()
    assert mapping["exc_type"] == "MappingError"
    assert mapping["exc_message"] == "Family: primary-key column family_id is missing"


def test_secrets_from_settings_are_scrubbed_everywhere() -> None:
    stream = io.StringIO()
    kafka = KafkaSettings(
        bootstrap_servers="b:9093", sasl_username="connector", sasl_password=SecretStr("hunter2-sasl")
    )
    handler = configure_logging("INFO", "json", stream=stream, secrets_from=kafka)
    try:
        register_secret(SecretStr("portal-key-0042"))
        log = logging.getLogger("connector.test")
        log.info("config %s", kafka.client_config())  # the mistake the scrubber is there for
        log.info("key portal-key-0042 in a message", extra={"error": "auth failed for hunter2-sasl"})
        log.info("secret field", extra={"error": kafka.sasl_password})
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "hunter2-sasl" not in text
    assert "portal-key-0042" not in text
    assert text.count("***") >= 4
    assert all(json.loads(line) for line in text.splitlines())


def test_level_and_text_format_are_configurable() -> None:
    stream = io.StringIO()
    handler = configure_logging("WARNING", "text", stream=stream)
    try:
        log = logging.getLogger("connector.test")
        log.info("hidden")
        log.warning("shown", extra={"partition": 4, "record": CANARY_NAME})
    finally:
        logging.getLogger().removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    assert "WARNING connector.test: shown partition=4 dropped=record" in line
    assert CANARY_NAME not in line


def test_configuring_twice_keeps_one_handler() -> None:
    first = configure_logging("INFO", "json", stream=io.StringIO())
    second = configure_logging("INFO", "json", stream=io.StringIO())
    try:
        root = logging.getLogger()
        assert first not in root.handlers
        assert second in root.handlers
    finally:
        logging.getLogger().removeHandler(second)


def test_every_context_field_the_connector_logs_is_allowed() -> None:
    """A field the code passes in ``extra=`` but the allow-list lacks would vanish silently."""
    import ast
    from pathlib import Path

    from connector.ops.logs import ALLOWED_FIELDS

    used: dict[str, str] = {}
    for path in (Path(__file__).resolve().parents[3] / "connector").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                        for key in kw.value.keys:
                            if isinstance(key, ast.Constant):
                                used[key.value] = f"{path.name}:{node.lineno}"
    assert used, "found no extra= at all: the scan is broken"
    assert {k: v for k, v in used.items() if k not in ALLOWED_FIELDS} == {}
