"""Configuration, one pydantic-settings model per stage, read from the environment.

Every setting has an environment variable (``CARECLOUD_<STAGE>_<NAME>``) and a documented
default. ``load_settings`` validates every model and reports every problem at once, naming
the variable, so a bad deployment fails at start-up with one readable message.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.config.exceptions import SettingsError

__all__ = ["IngestSettings", "KafkaSettings", "Settings", "load_settings"]


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster; secrets come from Kubernetes Secrets via env."""

    model_config = SettingsConfigDict(env_prefix="CARECLOUD_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(min_length=1)
    """Comma-separated host:port list of the brokers."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Transport: SASL_SSL for managed clusters."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    """SASL mechanism when the protocol is SASL_*."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password; never logged."""
    ssl_ca_location: str | None = None
    """PEM file of the CA that signed the brokers' certificates."""
    ssl_certificate_location: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    ssl_key_location: str | None = None
    """Client private key (PEM) for mutual TLS."""

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings shared by every client of the connector."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        return conf


class IngestSettings(BaseSettings):
    """The ingest loop: topics it owns, batching, and where the local store lives."""

    model_config = SettingsConfigDict(env_prefix="CARECLOUD_INGEST_", extra="ignore")

    mapping_file: Path
    """The mapping YAML (a ConfigMap in Kubernetes)."""
    group_id: str = "carecloud-connector"
    """Consumer group shared by every replica."""
    state_topic: str = "carecloud.state"
    """Compacted topic holding every entity's latest state: the source of truth."""
    dlq_topic: str = "carecloud.dlq"
    """Dead-letter topic: original bytes plus headers naming position, error and reason."""
    state_dir: Path = Path("/var/lib/carecloud/state")
    """Directory of the local store (one sub-directory per partition); a cache only."""
    transactional_id: str = Field(default_factory=lambda: f"carecloud-connector-{socket.gethostname()}")
    """Stable per replica (the StatefulSet pod name) so a restarted pod fences its old self."""
    batch_max_events: int = Field(default=5000, ge=1, le=100_000)
    """Events per Kafka transaction at most."""
    batch_max_ms: int = Field(default=500, ge=1, le=60_000)
    """Longest wait to fill a batch, in milliseconds."""
    session_timeout_ms: int = Field(default=15_000, ge=6_000, le=300_000)
    """How long a replica that vanished keeps its partitions (static membership: a restart
    within this time gets them back without a rebalance; a removed replica's partitions move
    to the others after it)."""
    transaction_timeout_ms: int = Field(default=60_000, ge=1_000, le=900_000)
    """How long a transaction of a replica that died for good (not restarted under the same
    name) stays open. Until it is aborted, read-committed readers (the snapshot's cut, the
    restore) stop in front of it; must exceed the longest batch."""
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    """Larger source messages are dead-lettered by reference (position only, no bytes)."""
    schema_registry_url: str | None = None
    """Schema Registry for Avro topics."""


class Settings:
    """All stages' settings, validated together."""

    def __init__(self, kafka: KafkaSettings, ingest: IngestSettings) -> None:
        self.kafka = kafka
        self.ingest = ingest


def load_settings(**overrides: dict[str, Any]) -> Settings:
    """Read every model from the environment; raise ``SettingsError`` listing every problem."""
    problems: list[str] = []
    models: dict[str, Any] = {}
    for key, cls in (("kafka", KafkaSettings), ("ingest", IngestSettings)):
        try:
            models[key] = cls(**overrides.get(key, {}))
        except ValidationError as exc:
            prefix = cls.model_config.get("env_prefix", "")
            for err in exc.errors():
                name = ".".join(str(p) for p in err["loc"])
                problems.append(f"{prefix}{name.upper()}: {err['msg']}")
    if problems:
        raise SettingsError(problems)
    return Settings(models["kafka"], models["ingest"])
