"""Kafka client settings (``CARECLOUD_KAFKA_*``): brokers, security and the identity provider.

Their own module because the security matrix (PLAINTEXT, SSL, SASL_PLAINTEXT/SSL with PLAIN,
SCRAM or OAUTHBEARER) and its checks are most of a settings file; ``connector.config.settings``
re-exports the class with the other stages' settings.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings"]


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster; secrets come from Kubernetes Secrets via env.

    Three ways in, as real clusters offer them: SASL_SSL with SCRAM-SHA-256/512 (or PLAIN);
    TLS with a private CA and, for mutual TLS, a client certificate and key; and OAUTHBEARER
    with librdkafka's built-in OIDC client-credentials flow (the token is fetched and refreshed
    by librdkafka from ``sasl_oauthbearer_token_endpoint_url``), as managed services use it.
    ``problems()`` names every missing or contradictory setting by its variable; secrets are
    ``SecretStr``, so ``connector.ops.logs`` scrubs them from every log line.
    """

    model_config = SettingsConfigDict(env_prefix="CARECLOUD_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(min_length=1)
    """Comma-separated host:port list of the brokers."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Transport: SASL_SSL for managed clusters, SSL for TLS (mutual TLS with a client certificate)."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    """SASL mechanism; required when the protocol is SASL_*."""
    sasl_username: str | None = None
    """SASL user name (PLAIN, SCRAM-*)."""
    sasl_password: SecretStr | None = None
    """SASL password (PLAIN, SCRAM-*); never logged."""
    sasl_oauthbearer_client_id: str | None = None
    """OAUTHBEARER: the OAuth client id the connector authenticates as at the token endpoint."""
    sasl_oauthbearer_client_secret: SecretStr | None = None
    """OAUTHBEARER: the OAuth client secret; never logged."""
    sasl_oauthbearer_token_endpoint_url: str | None = None
    """OAUTHBEARER: the identity provider's token endpoint (client-credentials grant)."""
    sasl_oauthbearer_scope: str | None = None
    """OAUTHBEARER: scope(s) to request, when the identity provider wants any."""
    sasl_oauthbearer_extensions: str | None = None
    """OAUTHBEARER: SASL extensions as comma-separated key=value pairs (Confluent Cloud:
    logicalCluster=lkc-...,identityPoolId=pool-...)."""
    ssl_ca_location: str | None = None
    """PEM file of the CA that signed the brokers' certificates (default: the system's CAs)."""
    ssl_certificate_location: str | None = None
    """Client certificate (PEM) for mutual TLS; needs the key too."""
    ssl_key_location: str | None = None
    """Client private key (PEM) for mutual TLS; needs the certificate too."""
    ssl_key_password: SecretStr | None = None
    """Password of the client private key, when it is encrypted; never logged."""

    def problems(self) -> list[str]:
        """Settings the chosen protocol and mechanism need or contradict, named by variable.

        Values are never quoted: a secret in the wrong variable must not reach an error message.
        """
        return self._sasl_problems() + self._oauth_problems() + self._tls_problems()

    def _sasl_problems(self) -> list[str]:
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        if not protocol.startswith("SASL_"):
            return [
                f"{_KAFKA}{name.upper()}: set, but {_KAFKA}SECURITY_PROTOCOL={protocol} does not use SASL "
                "(SASL_SSL or SASL_PLAINTEXT)"
                for name in ("sasl_mechanism", "sasl_username", "sasl_password", *_OAUTH_FIELDS)
                if getattr(self, name) is not None
            ]
        if mechanism is None:
            return [f"{_KAFKA}SASL_MECHANISM: required when {_KAFKA}SECURITY_PROTOCOL={protocol}"]
        if mechanism == "OAUTHBEARER":
            return []
        return [
            f"{_KAFKA}{name.upper()}: required when {_KAFKA}SASL_MECHANISM={mechanism}"
            for name in ("sasl_username", "sasl_password")
            if not _given(getattr(self, name))
        ]

    def _oauth_problems(self) -> list[str]:
        if self.sasl_mechanism != "OAUTHBEARER":
            return []
        when = f"when {_KAFKA}SASL_MECHANISM=OAUTHBEARER (OIDC client credentials)"
        problems = [
            f"{_KAFKA}{name.upper()}: required {when}"
            for name in _OAUTH_REQUIRED
            if not _given(getattr(self, name))
        ]
        url = self.sasl_oauthbearer_token_endpoint_url
        if url and not url.startswith(("https://", "http://")):
            problems.append(f"{_KAFKA}SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: must be an http(s) URL")
        extensions = self.sasl_oauthbearer_extensions
        if extensions and not all(_EXTENSION.fullmatch(item) for item in extensions.split(",")):
            problems.append(f"{_KAFKA}SASL_OAUTHBEARER_EXTENSIONS: must be comma-separated key=value pairs")
        return problems

    def _tls_problems(self) -> list[str]:
        protocol = self.security_protocol
        problems: list[str] = []
        if protocol not in ("SSL", "SASL_SSL"):
            problems += [
                f"{_KAFKA}{name.upper()}: set, but {_KAFKA}SECURITY_PROTOCOL={protocol} does not use TLS "
                "(SSL or SASL_SSL)"
                for name in (
                    "ssl_ca_location",
                    "ssl_certificate_location",
                    "ssl_key_location",
                    "ssl_key_password",
                )
                if getattr(self, name) is not None
            ]
        pair = ("SSL_CERTIFICATE_LOCATION", "SSL_KEY_LOCATION")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            missing, given = pair if self.ssl_certificate_location is None else pair[::-1]
            problems.append(f"{_KAFKA}{missing}: required with {_KAFKA}{given} (mutual TLS needs both)")
        if self.ssl_key_password is not None and self.ssl_key_location is None:
            problems.append(f"{_KAFKA}SSL_KEY_PASSWORD: set, but {_KAFKA}SSL_KEY_LOCATION is not")
        return problems

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings shared by every client of the connector."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _secret(self.sasl_password),
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": _secret(self.ssl_key_password),
        }
        if self.sasl_mechanism == "OAUTHBEARER":
            optional |= {
                "sasl.oauthbearer.method": "oidc",  # librdkafka fetches and refreshes the token itself
                "sasl.oauthbearer.client.id": self.sasl_oauthbearer_client_id,
                "sasl.oauthbearer.client.secret": _secret(self.sasl_oauthbearer_client_secret),
                "sasl.oauthbearer.token.endpoint.url": self.sasl_oauthbearer_token_endpoint_url,
                "sasl.oauthbearer.scope": self.sasl_oauthbearer_scope,
                "sasl.oauthbearer.extensions": self.sasl_oauthbearer_extensions,
            }
        conf.update({k: v for k, v in optional.items() if v is not None})
        return conf


_KAFKA = "CARECLOUD_KAFKA_"
_OAUTH_REQUIRED = (
    "sasl_oauthbearer_token_endpoint_url",
    "sasl_oauthbearer_client_id",
    "sasl_oauthbearer_client_secret",
)
_OAUTH_FIELDS = (*_OAUTH_REQUIRED, "sasl_oauthbearer_scope", "sasl_oauthbearer_extensions")
_EXTENSION = re.compile(r"[A-Za-z]+=[^,]+")
"""One SASL extension: an RFC 7628 key (letters) and a value (no comma: it separates pairs)."""


def _given(value: str | SecretStr | None) -> bool:
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return bool(raw)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
