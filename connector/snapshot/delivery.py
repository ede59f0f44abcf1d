"""Step 8 of a snapshot run (``connector.snapshot.run``): each entity delivered by its route.

File route: stream format → gzip → storage, visible only when complete; a file already stored
by this cut (same snapshot id, sha256 known) is kept, so a resumed run does not upload it
again. API route: the Portal client, which resumes its own session. A route that refuses an
entity fails that entity, not the run; a Portal that is away (``TransientError``) fails the
run, which the scheduler retries. Before the manifest names them, ``verify`` checks every file
is stored as written (step 9).

No step logs record values or EntityIds: logs get counts, keys and positions.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol

from connector.errors import ConnectorError, TransientError
from connector.model import fingerprint
from connector.sinks.exceptions import PortalAuthError
from connector.sinks.formats import FORMATS, GZIP_CONTENT_TYPE, gzip_chunks
from connector.sinks.keys import object_key
from connector.sinks.storage import Storage
from connector.snapshot._pipeline import in_background
from connector.snapshot.compiled_cut import CompiledStateReader
from connector.snapshot.cut import StateReader
from connector.snapshot.files import entity_file
from connector.snapshot.manifest import EntityResult, RunRecord
from connector.snapshot.plan import EntityPlan
from connector.snapshot.routing import Route

__all__ = ["ApiReceipt", "ApiRoute", "Deliveries", "verify"]

log = logging.getLogger(__name__)


class ApiReceipt(Protocol):
    """What the Portal acknowledged for one entity (``connector.sinks.portal.ApiDelivery``)."""

    def as_manifest(self) -> dict[str, Any]: ...


class ApiRoute(Protocol):
    """The Portal API route (``connector.snapshot.service.PortalRoute`` over ``PortalClient``)."""

    def deliver(
        self, entity: str, day: dt.date, records: Iterable[Mapping[str, Any]], count: int, *, snapshot_id: str
    ) -> ApiReceipt:
        """Deliver one complete entity set, committed whole, or raise."""
        ...


class _Config(Protocol):
    """The part of ``RunConfig`` a delivery reads."""

    @property
    def prefix(self) -> str: ...

    @property
    def format(self) -> str: ...

    @property
    def gzip_level(self) -> int: ...


class Deliveries:
    """One run's deliveries of one date's entities from the state at its cut.

    A Portal that refuses the API key (``PortalAuthError``) fails every later entity of the
    run by API at once: the key is refused for all of them.
    """

    def __init__(
        self,
        config: _Config,
        storage: Storage,
        api: ApiRoute | None,
        day: dt.date,
        record: RunRecord,
        state: StateReader | CompiledStateReader,
    ) -> None:
        self._config, self._storage, self._api = config, storage, api
        self._day, self._record, self._state = day, record, state
        self._api_refused: str | None = None

    def deliver(self, plan: EntityPlan) -> EntityResult:
        """The entity's result: blocked, delivered by its route, or failed by it."""
        day = self._day
        base = EntityResult(
            plan.entity,
            "delivered",
            plan.route.value,
            plan.records,
            fingerprint(plan.entity),
            held_out=len(plan.held_out),
            changes=plan.changes.as_json() if plan.changes is not None else None,
        )
        if plan.blocked_because is not None:
            log.warning("snapshot %s: %s blocked (%s)", day, plan.entity, plan.blocked_because)
            return replace(base, status="blocked", reason=plan.blocked_because)
        held_out = plan.held_out
        if plan.route is Route.API and self._api is not None:
            return self._deliver_api(self._api, plan, base)
        return self._write_file(plan, self._file(plan.entity, held_out), base)

    def _deliver_api(self, api: ApiRoute, plan: EntityPlan, base: EntityResult) -> EntityResult:
        day, held_out = self._day, plan.held_out
        records = (
            values for entity_id, values in self._state.entities(plan.entity) if entity_id not in held_out
        )
        if self._api_refused is not None:  # the key was refused: no entity can go by API
            return replace(base, status="failed", reason=self._api_refused)
        try:
            delivery = api.deliver(
                plan.entity, day, records, plan.records, snapshot_id=self._record.snapshot_id
            )
        except TransientError:
            raise  # Portal away: no manifest; the scheduler retries, resuming the sessions
        except ConnectorError as exc:  # refused for this entity: the others go on
            # The class and status only: the message is in the manifest's reason.
            log.error(
                "snapshot %s: refused by the Portal API",
                day,
                extra={
                    "entity": plan.entity,
                    "error": type(exc).__name__,
                    "status": getattr(exc, "status", None),
                },
            )
            if isinstance(exc, PortalAuthError):
                self._api_refused = str(exc)
            return replace(base, status="failed", reason=str(exc))
        return replace(base, api=delivery.as_manifest())

    def _file(self, entity: str, held_out: frozenset[str]) -> Iterator[bytes]:
        """The entity's file, uncompressed, in chunks."""
        return entity_file(FORMATS[self._config.format], entity, held_out, self._state)

    def _write_file(self, plan: EntityPlan, file: Iterator[bytes], base: EntityResult) -> EntityResult:
        cfg, day = self._config, self._day
        fmt = FORMATS[cfg.format]
        key = object_key(cfg.prefix, day, plan.entity, fmt)
        meta = {"snapshot-id": self._record.snapshot_id, "records": str(plan.records)}
        stored = self._storage.stat(key)
        if stored is None or stored.sha256 is None or dict(stored.metadata) != meta:
            # Three stages on their own threads: formatting, compression (itself on two), and
            # the upload here, so compression goes on while a part is being sent.
            compressed = gzip_chunks(in_background(file), cfg.gzip_level)
            stored = self._storage.put_stream(
                key,
                in_background(compressed, depth=16, name="snapshot-gzip"),
                content_type=GZIP_CONTENT_TYPE,
                metadata=meta,
            )
            log.info(
                "snapshot %s: %s file written (%d records, %d bytes)",
                day,
                plan.entity,
                plan.records,
                stored.size,
                extra={"key": key},
            )
        else:
            log.info(
                "snapshot %s: %s file already written by this cut; kept", day, plan.entity, extra={"key": key}
            )
        return replace(
            base,
            storage=self._storage.name,
            key=key,
            format=fmt.name,
            bytes=stored.size,
            sha256=stored.sha256,
        )


def verify(storage: Storage, results: Iterable[EntityResult]) -> None:
    """Every file the manifest will name is there, whole, with the size and sha256 it will say."""
    for result in results:
        if result.key is None:
            continue
        stored = storage.stat(result.key)
        if stored is None or stored.size != result.bytes or stored.sha256 != result.sha256:
            raise TransientError(f"{result.key} is not stored as written; the manifest is not published")
