"""Configuration, one pydantic-settings model per stage, read from the environment.

Every setting has an environment variable (``CARECLOUD_<STAGE>_<NAME>``) and a documented
default. ``load_settings`` validates every model and reports every problem at once, naming
the variable, so a bad deployment fails at start-up with one readable message.
"""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.config.exceptions import SettingsError
from connector.config.kafka import KafkaSettings

__all__ = [
    "IngestSettings",
    "KafkaSettings",
    "OpsSettings",
    "PortalSettings",
    "S3Settings",
    "Settings",
    "SftpSettings",
    "SnapshotSettings",
    "load_settings",
    "sink_problems",
]


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
    carry_topic: str = ""
    """The connector's own topic carrying a primary-key update's unchanged-TOAST values from the
    old key's partition to the new key's (``connector.ingest.carry``); created with the state
    topic's partition count and consumed with the source topics. Empty: the state topic's name
    followed by ``.carry``, so each state topic has its own."""
    dlq_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=3600 * 1000, le=30 * 24 * 3600 * 1000)
    """The dead-letter topic's retention.ms, set when ingest creates the topic (an existing
    topic keeps its own; ingest warns when it differs). A dead letter is a source event's raw
    bytes, health data kept only to be replayed after a fix: 7 days spans a fix made over a
    weekend, and nothing is kept longer than that needs (30 days at most)."""
    replication_factor: int = Field(default=3, ge=1, le=16)
    """Replicas of each partition of the state and dead-letter topics when ingest creates them;
    an existing state topic with fewer is refused at start-up. The state topic is the source of
    truth: with 3, a broker's disk can be lost without losing a committed row. On a cluster with
    fewer brokers (the demo, tests) the topics get one replica per broker and a warning says so."""
    min_insync_replicas: int = Field(default=2, ge=1, le=16)
    """The state and dead-letter topics' min.insync.replicas when ingest creates them: a commit
    (acks=all) waits until this many replicas hold the batch, and stops rather than commit on
    fewer. 2 of 3 keeps committing through one broker's outage and never has a committed row on
    one disk only. Lowered with the replication factor on a smaller cluster (as many brokers may
    fail as configured: 3 and 2 become 1 and 1 on one broker); at most the replication factor."""
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
    max_key_bytes: int = Field(default=65_536, ge=256)
    """Larger message keys, and larger headers in all, are dead-lettered by reference: a
    Debezium key is a few primary-key columns, and the key headers of a primary-key update
    are keys too."""
    batch_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    """Bytes of messages (keys and values) per Kafka transaction, about: with
    batch_max_events, what bounds a batch's memory (5000 messages of 1 MB would be 5 GB)."""
    schema_registry_url: str | None = None
    """Schema Registry for Avro topics."""
    fast_path: Literal["auto", "on", "off"] = "auto"
    """The compiled decode-and-map path for Debezium JSON topics (the carecloud_fastpath
    extension, docs/decisions/0012): auto uses it when installed and built from these sources
    (a stale build is refused by its contract version, with a warning), on refuses to start
    without it, off always decodes and maps in Python. Same results either way; about twice
    the events per second with it."""
    source_columns: bool = True
    """Keep each state row's merged source columns (the source row its values were mapped
    from) next to its values, so a mapping rolled out later re-maps the rows the state already
    holds, without the source (the re-mapping pass, docs/decisions/0025). Costs state size
    (+94 % per row on the example's Family, every source column kept) and 1 to 3 µs per event;
    off, rows under an older mapping wait for their source to re-write them."""
    remap_rows_per_batch: int = Field(default=500, ge=1, le=100_000)
    """Rows the re-mapping pass re-maps at most in each ingest transaction (per owned
    partition), after the batch's own events: bounds what a pass adds to a batch's time."""
    marker_purge_after_s: int = Field(default=0, ge=0)
    """Purge a delete marker this many seconds after ingest wrote it (a tombstone in the state
    topic, in a batch's transaction, and the key dropped from the local store); 0, the default,
    keeps markers forever. Only safe above the longest time an event older than a delete can
    still reach the source topics: their retention, Debezium's longest outage and replay, a
    re-snapshot's duration (docs/decisions/0005). Days, not hours."""
    transaction_ledger_purge_after_s: int = Field(default=604_800, ge=0)
    """With transaction tracking (the mapping's transactions.topic): purge a transaction's
    ledger records (which of its events the state holds) this many seconds after ingest last
    wrote them; the snapshot judges only transactions written within half of it, so an
    incomplete transaction older than that is reported as expired instead of held out. Above the
    longest a source transaction can take to reach the state whole: 7 days by default; 0 keeps
    them forever (docs/decisions/0020)."""

    mapping_topic: str = ""
    """The mapping registry (``connector.state.mapping_registry``): a compacted one-partition
    topic recording each entity's mapping, its versions and since when; read at every start-up
    to refuse an EntityId change, and by the snapshot to judge rows' mapping versions. Empty:
    the state topic's name followed by ``.mappings``."""
    allow_entity_id_change: bool = False
    """Start with a mapping that moves stored EntityIds (a table's entity_id template, or the
    template or columns a references field reads). Off, such a mapping is refused at start-up
    with the tables and how many EntityIds would change; on, the change goes ahead and is
    delivered as removals and additions (which the snapshot's change gate then blocks until
    overridden). Turn it off again after the rollout."""

    @property
    def mapping_topic_name(self) -> str:
        """``mapping_topic``, or the state topic's name with ``.mappings`` when left empty."""
        return self.mapping_topic or f"{self.state_topic}.mappings"

    @property
    def carry_topic_name(self) -> str:
        """``carry_topic``, or the state topic's name with ``.carry`` when it is left empty."""
        return self.carry_topic or f"{self.state_topic}.carry"


class SnapshotSettings(BaseSettings):
    """The daily snapshot: when, what it checks, how it routes, where files go."""

    model_config = SettingsConfigDict(env_prefix="CARECLOUD_SNAPSHOT_", extra="ignore")

    enabled: bool = False
    """Run the daily snapshot in this process (beside ingest); the snapshot command runs it anyway."""
    zone: str = "America/Los_Angeles"
    """IANA zone of the start and deadline wall times."""
    start: dt.time = dt.time(0, 30)
    """Local time the daily run starts (and cuts)."""
    deadline: dt.time = dt.time(3, 0)
    """Local time by which every file and the manifest must be published (CCN ingests 3-5 AM)."""
    decision_time: dt.time | None = None
    """Local time until which a date with an entity blocked by a check or refused by its route
    waits for an override or a fix (the run alerts at once and looks again every recheck_s);
    then its manifest is written without that entity. At the start time: no waiting. Unset:
    30 minutes before the deadline (02:30 at 03:00), or the start in a shorter window."""
    recheck_s: int = Field(default=300, ge=10, le=3600)
    """How often a waiting date is run again (a fixed API key, a retry that now succeeds)."""
    expected_duration_s: int = Field(default=1800, ge=1)
    """How long a run is expected to take: a missed day still runs on start-up only if it can
    finish before the deadline, and waiting for lag stops this long before the deadline."""
    sink: Literal["s3", "sftp"] = "s3"
    """Where entity files go; the lease, the pinned cut and the manifest live there too."""
    prefix: str = "carecloud"
    """Key prefix (S3) or directory below the SFTP root; files are <prefix>/<date>/<Entity>..."""
    format: Literal["csv", "jsonl"] = "csv"
    """File format (docs/file-format.md)."""
    gzip_level: int = Field(default=6, ge=0, le=9)
    """Compression level of the files (docs/decisions/0007)."""
    file_threshold: int = Field(default=5000, ge=0)
    """Entities with more records than this go as files; others by API (CareCloud: 5000)."""
    api_return_below: int | None = Field(default=None, ge=0)
    """An entity last delivered as a file stays a file until its count falls below this, so
    one hovering around the file threshold does not move between S3 and the Portal from one
    day to the next; at most the file threshold (the API route is never used above it).
    Unset: nine tenths of the file threshold (4500 at CareCloud's 5000)."""
    api_batch_size: int = Field(default=1000, ge=1, le=1000)
    """Records per Portal API batch (CareCloud: at most 1000)."""
    api_enabled: bool = False
    """Deliver small entities through the Portal API; when off, every entity goes as a file."""
    orphan_policy: Literal["hold_out", "block"] = "hold_out"
    """Orphans (a reference to a missing parent): leave them out and list them, or block the entity."""
    max_drop_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    """An entity that shrank by more than this since the last delivery is blocked unless overridden."""
    max_change_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    """An entity of which more than this share of its last delivery changed content or went
    away is blocked unless overridden: the count can stay level while every value or every
    EntityId moved (1.0 turns the check off)."""
    mapping_policy: Literal["hold", "wait"] = "hold"
    """An entity whose rows at the cut span mapping versions (a mapping rolled out, not every
    row re-mapped or re-written under it yet) is never delivered mixed: hold blocks it with the
    versions and counts as the reason, like a failed gate (the date waits for a fix until the
    decision time, then goes without it; overrides do not lift it). wait first waits, before
    taking the cut, for ingest's re-mapping pass to finish in every state partition (its progress
    in the mapping registry), bounded by the decision time and the lag wait's bound, then cuts
    and holds whatever is still mixed (docs/decisions/0025)."""
    lag_policy: Literal["wait", "go"] = "wait"
    """Before the cut: wait for ingest to catch up (bounded by the deadline) or cut at once."""
    max_lag_events: int = Field(default=0, ge=0)
    """Ingest lag (events not yet in the state) at or below which the cut goes ahead."""
    lease_ttl_s: int = Field(default=600, ge=10)
    """How long a run's lease lasts without renewal (renewed every third of it)."""
    work_dir: Path | None = None
    """Where the cut's temporary on-disk copy of the state lives (default: the system temp dir)."""
    owner: str = Field(default_factory=socket.gethostname)
    """This pod's name in the lease."""
    fast_path: Literal["auto", "on", "off"] = "auto"
    """Read the cut with the compiled spill and write CSV with the compiled writer (the
    carecloud_fastpath extension, docs/decisions/0013): auto uses them when installed and
    built from these sources (a stale build is refused, with a warning), on refuses to start
    without them, off reads and formats in Python. Same files either way; about three times
    the records per second with them."""


class S3Settings(BaseSettings):
    """CareCloud's S3 bucket (used when CARECLOUD_SNAPSHOT_SINK=s3)."""

    model_config = SettingsConfigDict(env_prefix="CARECLOUD_S3_", extra="ignore")

    bucket: str | None = None
    """Bucket name; required when the sink is s3."""
    endpoint_url: str | None = None
    """S3-compatible endpoint (tests, the demo); unset for AWS."""
    region: str = "us-west-2"
    """Bucket region."""
    sse: Literal["none", "AES256", "aws:kms"] = "AES256"
    """Server-side encryption: none, SSE-S3 (AES256) or SSE-KMS."""
    kms_key_id: str | None = None
    """KMS key id or ARN for SSE-KMS (the bucket default key when unset)."""
    part_size_mb: int = Field(default=16, ge=5, le=5120)
    """Multipart upload part size in MiB (S3's minimum is 5)."""
    access_key_id: str | None = None
    """Explicit credentials; unset uses the default chain (IRSA, instance profile, env)."""
    secret_access_key: SecretStr | None = None
    """Explicit secret; never logged."""


class SftpSettings(BaseSettings):
    """CareCloud's SFTP endpoint (used when CARECLOUD_SNAPSHOT_SINK=sftp)."""

    model_config = SettingsConfigDict(env_prefix="CARECLOUD_SFTP_", extra="ignore")

    host: str | None = None
    """SFTP host; required when the sink is sftp."""
    port: int = Field(default=22, ge=1, le=65535)
    """SFTP port."""
    username: str | None = None
    """Login name."""
    private_key_file: Path | None = None
    """Private key (a mounted Secret)."""
    password: SecretStr | None = None
    """Password, when no key is used; never logged."""
    known_hosts_file: Path | None = None
    """known_hosts holding the server's host key; required (host keys are always checked)."""
    root: str = "."
    """Directory on the server that keys are relative to."""


class OpsSettings(BaseSettings):
    """The operations endpoint and the logs (connector.ops.health, connector.ops.logs)."""

    model_config = SettingsConfigDict(env_prefix="CARECLOUD_OPS_", extra="ignore")

    http_host: str = "0.0.0.0"
    """Address of /metrics, /healthz and /readyz: all interfaces, so the kubelet and Prometheus reach it."""
    http_port: int = Field(default=8080, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz (0 picks a free one, for tests)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""
    log_format: Literal["json", "text"] = "json"
    """One JSON object per line (for log collectors), or text for a terminal."""
    stall_after_s: float = Field(default=120.0, gt=0)
    """/healthz turns 503 when the main loop has not ticked for this long (the kubelet restarts
    the pod); longer than the slowest batch commit, and than a restore between its beats."""


class PortalSettings(BaseSettings):
    """CareCloud's Portal API (used when CARECLOUD_SNAPSHOT_API_ENABLED=true)."""

    model_config = SettingsConfigDict(env_prefix="CARECLOUD_PORTAL_", extra="ignore")

    base_url: str | None = None
    """The Portal API's base URL (openapi.yaml's server)."""
    api_key: SecretStr | None = None
    """API key sent in X-API-Key (a mounted Secret); never logged."""
    max_concurrency: int = Field(default=4, ge=1, le=32)
    """Batches in flight at once per entity."""
    max_attempts: int = Field(default=8, ge=1, le=50)
    """Tries per call (429, 5xx, timeouts, dropped connections), each wait capped by the deadline."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Timeout of one HTTP request."""


class Settings:
    """All stages' settings, validated together."""

    def __init__(
        self,
        kafka: KafkaSettings,
        ingest: IngestSettings,
        snapshot: SnapshotSettings | None = None,
        s3: S3Settings | None = None,
        sftp: SftpSettings | None = None,
        portal: PortalSettings | None = None,
        ops: OpsSettings | None = None,
    ) -> None:
        self.kafka = kafka
        self.ingest = ingest
        self.snapshot = snapshot or SnapshotSettings()
        self.s3 = s3 or S3Settings()
        self.sftp = sftp or SftpSettings()
        self.portal = portal or PortalSettings()
        self.ops = ops or OpsSettings()


_MODELS: tuple[tuple[str, type[BaseSettings]], ...] = (
    ("kafka", KafkaSettings),
    ("ingest", IngestSettings),
    ("snapshot", SnapshotSettings),
    ("s3", S3Settings),
    ("sftp", SftpSettings),
    ("portal", PortalSettings),
    ("ops", OpsSettings),
)


def load_settings(**overrides: dict[str, Any]) -> Settings:
    """Read every model from the environment; raise ``SettingsError`` listing every problem."""
    problems: list[str] = []
    models: dict[str, Any] = {}
    for key, cls in _MODELS:
        try:
            models[key] = cls(**overrides.get(key, {}))
        except ValidationError as exc:
            prefix = cls.model_config.get("env_prefix", "")
            for err in exc.errors():
                name = ".".join(str(p) for p in err["loc"])
                problems.append(f"{prefix}{name.upper()}: {err['msg']}")
    if "kafka" in models:
        problems.extend(models["kafka"].problems())
    if "ingest" in models and models["ingest"].min_insync_replicas > models["ingest"].replication_factor:
        problems.append(
            "CARECLOUD_INGEST_MIN_INSYNC_REPLICAS: must be at most CARECLOUD_INGEST_REPLICATION_FACTOR "
            "(no commit could ever be acknowledged)"
        )
    if "snapshot" in models and models["snapshot"].enabled:
        problems.extend(
            sink_problems(models["snapshot"], models.get("s3"), models.get("sftp"), models.get("portal"))
        )
    if problems:
        raise SettingsError(problems)
    return Settings(**models)


def sink_problems(
    snapshot: SnapshotSettings,
    s3: S3Settings | None,
    sftp: SftpSettings | None,
    portal: PortalSettings | None = None,
) -> list[str]:
    """Settings the snapshot needs beyond their own validation, named by their variables.

    Checked at start-up when the daily snapshot runs in the process, and by the snapshot
    command before it connects to anything.
    """
    problems = []
    if snapshot.sink == "s3" and s3 is not None and not s3.bucket:
        problems.append("CARECLOUD_S3_BUCKET: required when CARECLOUD_SNAPSHOT_SINK=s3")
    if snapshot.sink == "sftp" and sftp is not None:
        for name in ("host", "username", "known_hosts_file"):
            if getattr(sftp, name) is None:
                problems.append(f"CARECLOUD_SFTP_{name.upper()}: required when CARECLOUD_SNAPSHOT_SINK=sftp")
        if sftp.private_key_file is None and sftp.password is None:
            problems.append(
                "CARECLOUD_SFTP_PRIVATE_KEY_FILE: a private key or CARECLOUD_SFTP_PASSWORD is required "
                "when CARECLOUD_SNAPSHOT_SINK=sftp"
            )
    if snapshot.api_enabled and portal is not None:
        for name in ("base_url", "api_key"):
            if getattr(portal, name) is None:
                problems.append(
                    f"CARECLOUD_PORTAL_{name.upper()}: required when CARECLOUD_SNAPSHOT_API_ENABLED=true"
                )
    if snapshot.api_return_below is not None and snapshot.api_return_below > snapshot.file_threshold:
        problems.append(
            "CARECLOUD_SNAPSHOT_API_RETURN_BELOW: must be at most CARECLOUD_SNAPSHOT_FILE_THRESHOLD"
        )
    if not snapshot.start < snapshot.deadline:
        problems.append("CARECLOUD_SNAPSHOT_START: must be before CARECLOUD_SNAPSHOT_DEADLINE")
    elif (
        snapshot.decision_time is not None
        and not snapshot.start <= snapshot.decision_time <= snapshot.deadline
    ):
        problems.append(
            "CARECLOUD_SNAPSHOT_DECISION_TIME: must lie between CARECLOUD_SNAPSHOT_START and "
            "CARECLOUD_SNAPSHOT_DEADLINE"
        )
    try:
        ZoneInfo(snapshot.zone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"CARECLOUD_SNAPSHOT_ZONE: {snapshot.zone!r} is not an IANA time zone")
    return problems
