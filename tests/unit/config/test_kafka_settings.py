"""KafkaSettings: the librdkafka settings per security mechanism, and problems named by variable.

OAUTHBEARER is checked here only (config and validation): no identity provider runs in the
test environment, so its token flow is not exercised end to end; SCRAM over TLS is, against
the project's SASL_SSL broker (tests/integration/test_security.py).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from pydantic import SecretStr

from connector.config import SettingsError
from connector.config.settings import KafkaSettings, load_settings
from connector.ops.logs import configure_logging

PASSWORD = "scram-pw-5f2e9a"
CLIENT_SECRET = "oidc-secret-8c41d7"
KEY_PASSWORD = "key-pw-33b0f1"
SECRETS = (PASSWORD, CLIENT_SECRET, KEY_PASSWORD)
OIDC_URL = "https://idp.example.com/oauth2/token"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: a developer's CARECLOUD_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("CARECLOUD_"):
            monkeypatch.delenv(name)


def _set_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    monkeypatch.setenv("CARECLOUD_KAFKA_BOOTSTRAP_SERVERS", "b1:9093,b2:9093")
    for name, value in env.items():
        monkeypatch.setenv(f"CARECLOUD_KAFKA_{name}", value)


def _from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> KafkaSettings:
    _set_env(monkeypatch, **env)
    return KafkaSettings.model_validate({})  # reads the environment, as KafkaSettings() does


def _problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The SettingsError text load_settings raises for these Kafka variables."""
    _set_env(monkeypatch, **env)
    with pytest.raises(SettingsError) as info:
        load_settings(ingest={"mapping_file": "mapping.yaml"})
    return str(info.value)


# -- client_config per mechanism ------------------------------------------------------------


def test_plaintext_is_the_default_and_adds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = _from_env(monkeypatch)
    assert kafka.client_config() == {"bootstrap.servers": "b1:9093,b2:9093", "security.protocol": "PLAINTEXT"}
    assert kafka.problems() == []


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_ssl_with_a_password_mechanism(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    kafka = _from_env(
        monkeypatch,
        SECURITY_PROTOCOL="SASL_SSL",
        SASL_MECHANISM=mechanism,
        SASL_USERNAME="connector",
        SASL_PASSWORD=PASSWORD,
        SSL_CA_LOCATION="/etc/carecloud/kafka-tls/ca.crt",
    )
    assert kafka.problems() == []
    assert kafka.client_config() == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": "connector",
        "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/carecloud/kafka-tls/ca.crt",
    }


def test_mutual_tls_with_a_custom_ca_and_an_encrypted_key(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = _from_env(
        monkeypatch,
        SECURITY_PROTOCOL="SSL",
        SSL_CA_LOCATION="/tls/ca.pem",
        SSL_CERTIFICATE_LOCATION="/tls/client.pem",
        SSL_KEY_LOCATION="/tls/client.key",
        SSL_KEY_PASSWORD=KEY_PASSWORD,
    )
    assert kafka.problems() == []
    assert kafka.client_config() == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SSL",
        "ssl.ca.location": "/tls/ca.pem",
        "ssl.certificate.location": "/tls/client.pem",
        "ssl.key.location": "/tls/client.key",
        "ssl.key.password": KEY_PASSWORD,
    }


def test_tls_with_the_system_cas_and_no_client_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = _from_env(monkeypatch, SECURITY_PROTOCOL="SSL")
    assert kafka.problems() == []
    assert kafka.client_config() == {"bootstrap.servers": "b1:9093,b2:9093", "security.protocol": "SSL"}


def test_oauthbearer_uses_librdkafkas_oidc_client_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = _from_env(
        monkeypatch,
        SECURITY_PROTOCOL="SASL_SSL",
        SASL_MECHANISM="OAUTHBEARER",
        SASL_OAUTHBEARER_CLIENT_ID="carecloud-connector",
        SASL_OAUTHBEARER_CLIENT_SECRET=CLIENT_SECRET,
        SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL=OIDC_URL,
        SASL_OAUTHBEARER_SCOPE="kafka",
        SASL_OAUTHBEARER_EXTENSIONS="logicalCluster=lkc-abc12,identityPoolId=pool-XyZ9",
    )
    assert kafka.problems() == []
    assert kafka.client_config() == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "carecloud-connector",
        "sasl.oauthbearer.client.secret": CLIENT_SECRET,
        "sasl.oauthbearer.token.endpoint.url": OIDC_URL,
        "sasl.oauthbearer.scope": "kafka",
        "sasl.oauthbearer.extensions": "logicalCluster=lkc-abc12,identityPoolId=pool-XyZ9",
    }


def test_oauthbearer_scope_and_extensions_are_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = _from_env(
        monkeypatch,
        SECURITY_PROTOCOL="SASL_SSL",
        SASL_MECHANISM="OAUTHBEARER",
        SASL_OAUTHBEARER_CLIENT_ID="carecloud-connector",
        SASL_OAUTHBEARER_CLIENT_SECRET=CLIENT_SECRET,
        SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL=OIDC_URL,
    )
    assert kafka.problems() == []
    config = kafka.client_config()
    assert "sasl.oauthbearer.scope" not in config
    assert "sasl.oauthbearer.extensions" not in config
    assert config["sasl.oauthbearer.method"] == "oidc"


def test_librdkafka_accepts_every_key_the_oauthbearer_config_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client is made (no broker, no identity provider: loopback's closed discard port), so a
    misspelt property would fail here with librdkafka's 'No such configuration property'."""
    kafka = _from_env(
        monkeypatch,
        BOOTSTRAP_SERVERS="127.0.0.1:9",
        SECURITY_PROTOCOL="SASL_SSL",
        SASL_MECHANISM="OAUTHBEARER",
        SASL_OAUTHBEARER_CLIENT_ID="carecloud-connector",
        SASL_OAUTHBEARER_CLIENT_SECRET=CLIENT_SECRET,
        SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL="http://127.0.0.1:9/token",
        SASL_OAUTHBEARER_SCOPE="kafka",
        SASL_OAUTHBEARER_EXTENSIONS="logicalCluster=lkc-abc12",
    )
    assert kafka.problems() == []
    producer = Producer({**kafka.client_config(), "log_level": 0, "error_cb": lambda _e: None})
    assert producer.flush(0) == 0


# -- problems named by variable ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SECURITY_PROTOCOL": "SASL_SSL"},
            ["CARECLOUD_KAFKA_SASL_MECHANISM: required when CARECLOUD_KAFKA_SECURITY_PROTOCOL=SASL_SSL"],
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "SCRAM-SHA-512"},
            [
                "CARECLOUD_KAFKA_SASL_USERNAME: required when CARECLOUD_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
                "CARECLOUD_KAFKA_SASL_PASSWORD: required when CARECLOUD_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
            ],
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "SCRAM-SHA-256", "SASL_USERNAME": "c"},
            ["CARECLOUD_KAFKA_SASL_PASSWORD: required when CARECLOUD_KAFKA_SASL_MECHANISM=SCRAM-SHA-256"],
        ),
        (
            {
                "SECURITY_PROTOCOL": "SASL_SSL",
                "SASL_MECHANISM": "OAUTHBEARER",
                "SASL_OAUTHBEARER_CLIENT_ID": "connector",
                "SASL_OAUTHBEARER_CLIENT_SECRET": CLIENT_SECRET,
            },
            [
                "CARECLOUD_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: required when "
                "CARECLOUD_KAFKA_SASL_MECHANISM=OAUTHBEARER (OIDC client credentials)"
            ],
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "OAUTHBEARER"},
            [
                "CARECLOUD_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: required when",
                "CARECLOUD_KAFKA_SASL_OAUTHBEARER_CLIENT_ID: required when",
                "CARECLOUD_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET: required when",
            ],
        ),
        (
            {
                "SECURITY_PROTOCOL": "SASL_SSL",
                "SASL_MECHANISM": "OAUTHBEARER",
                "SASL_OAUTHBEARER_CLIENT_ID": "connector",
                "SASL_OAUTHBEARER_CLIENT_SECRET": CLIENT_SECRET,
                "SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "idp.example.com/token",
                "SASL_OAUTHBEARER_EXTENSIONS": "logicalCluster",
            },
            [
                "CARECLOUD_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: must be an http(s) URL",
                "CARECLOUD_KAFKA_SASL_OAUTHBEARER_EXTENSIONS: must be comma-separated key=value pairs",
            ],
        ),
        (
            # The classic slip: credentials configured, protocol left at its PLAINTEXT default.
            {"SASL_MECHANISM": "SCRAM-SHA-512", "SASL_USERNAME": "c", "SASL_PASSWORD": PASSWORD},
            [
                "CARECLOUD_KAFKA_SASL_MECHANISM: set, but CARECLOUD_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
                "does not use SASL",
                "CARECLOUD_KAFKA_SASL_USERNAME: set, but",
                "CARECLOUD_KAFKA_SASL_PASSWORD: set, but",
            ],
        ),
        (
            {"SSL_CA_LOCATION": "/tls/ca.pem"},
            [
                "CARECLOUD_KAFKA_SSL_CA_LOCATION: set, but CARECLOUD_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
                "does not use TLS (SSL or SASL_SSL)"
            ],
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_CERTIFICATE_LOCATION": "/tls/client.pem"},
            [
                "CARECLOUD_KAFKA_SSL_KEY_LOCATION: required with CARECLOUD_KAFKA_SSL_CERTIFICATE_LOCATION "
                "(mutual TLS needs both)"
            ],
        ),
        (
            {
                "SECURITY_PROTOCOL": "SSL",
                "SSL_KEY_LOCATION": "/tls/client.key",
                "SSL_KEY_PASSWORD": KEY_PASSWORD,
            },
            [
                "CARECLOUD_KAFKA_SSL_CERTIFICATE_LOCATION: required with CARECLOUD_KAFKA_SSL_KEY_LOCATION",
            ],
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_KEY_PASSWORD": KEY_PASSWORD},
            ["CARECLOUD_KAFKA_SSL_KEY_PASSWORD: set, but CARECLOUD_KAFKA_SSL_KEY_LOCATION is not"],
        ),
    ],
    ids=[
        "sasl-without-mechanism",
        "scram-without-credentials",
        "scram-without-password",
        "oauthbearer-without-token-endpoint",
        "oauthbearer-without-anything",
        "oauthbearer-bad-url-and-extensions",
        "credentials-with-plaintext",
        "ca-with-plaintext",
        "certificate-without-key",
        "key-without-certificate",
        "key-password-without-key",
    ],
)
def test_problems_name_the_variable_and_never_the_value(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: list[str]
) -> None:
    text = _problems(monkeypatch, **env)
    lines = text.splitlines()[1:]
    assert len(lines) == len(expected), text
    for line, start in zip(lines, expected, strict=True):
        assert line.strip().startswith(start), text
    assert not any(secret in text for secret in SECRETS)


def test_kafka_problems_are_reported_with_every_other_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECLOUD_OPS_HTTP_PORT", "70000")
    text = _problems(monkeypatch, SECURITY_PROTOCOL="SASL_SSL", SASL_MECHANISM="OAUTHBEARER")
    assert "CARECLOUD_OPS_HTTP_PORT" in text
    assert "CARECLOUD_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET: required" in text


def test_a_bad_mechanism_is_named_without_its_value_list_leaking_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _problems(
        monkeypatch, SECURITY_PROTOCOL="SASL_SSL", SASL_MECHANISM="GSSAPI", SASL_PASSWORD=PASSWORD
    )
    assert "CARECLOUD_KAFKA_SASL_MECHANISM" in text
    assert PASSWORD not in text


# -- secrets stay secret ------------------------------------------------------------------------


@pytest.fixture
def _root_level() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.mark.usefixtures("_root_level")
def test_every_kafka_secret_is_scrubbed_from_logs_and_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = _from_env(
        monkeypatch,
        SECURITY_PROTOCOL="SASL_SSL",
        SASL_MECHANISM="OAUTHBEARER",
        SASL_PASSWORD=PASSWORD,
        SASL_OAUTHBEARER_CLIENT_ID="connector",
        SASL_OAUTHBEARER_CLIENT_SECRET=CLIENT_SECRET,
        SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL=OIDC_URL,
        SSL_CERTIFICATE_LOCATION="/tls/client.pem",
        SSL_KEY_LOCATION="/tls/client.key",
        SSL_KEY_PASSWORD=KEY_PASSWORD,
    )
    assert all(isinstance(getattr(kafka, name), SecretStr) for name in _secret_fields())
    assert not any(secret in repr(kafka) or secret in str(kafka.model_dump()) for secret in SECRETS)
    stream = io.StringIO()
    handler = configure_logging("DEBUG", "json", stream=stream, secrets_from=kafka)
    try:
        log = logging.getLogger("connector.test")
        log.info("client config %s", kafka.client_config())  # the mistake the scrubber is there for
        log.warning("auth failed", extra={"error": f"token request with {CLIENT_SECRET} refused"})
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "client config" in text
    assert not any(secret in text for secret in SECRETS), text


def _secret_fields() -> list[str]:
    """Every field that holds a secret; a new one must be a SecretStr to be scrubbed."""
    return ["sasl_password", "sasl_oauthbearer_client_secret", "ssl_key_password"]


def test_only_the_secret_fields_are_typed_as_secrets() -> None:
    secret = {
        name
        for name, field in KafkaSettings.model_fields.items()
        if field.annotation is not None and "SecretStr" in str(field.annotation)
    }
    assert secret == set(_secret_fields())
    for name in KafkaSettings.model_fields:
        if any(word in name for word in ("password", "secret")):
            assert name in secret, f"{name} looks like a secret but is not a SecretStr"
