"""A tiny real Schema Registry over HTTP, for integration tests and the demo.

It speaks the subset of Confluent's REST API that producers and ``SchemaRegistryClient``
use to register and fetch schemas, so the Avro decoder is exercised over a real socket:

- ``POST /subjects/{subject}/versions`` ``{"schema": "...", "schemaType"?: "AVRO"}`` ->
  ``{"id": N}``; the same schema text gets the same id under any subject, as in Confluent's;
- ``GET /schemas/ids/{id}`` -> ``{"schema": "..."}`` (``schemaType`` when not AVRO), or 404
  ``{"error_code": 40403, ...}``;
- ``GET /subjects`` -> the subject names; ``GET /subjects/{subject}/versions`` -> ``[1, ...]``;
  ``GET /subjects/{subject}/versions/latest`` -> ``{"subject", "version", "id", "schema"}``.

Schemas are kept in memory only. ``stop()`` then ``start()`` again keeps them and the port,
which is how a test shows the decoder riding out a registry outage. Never used in production.

    with SchemaRegistryServer() as registry:
        decoder = make_decoder("debezium-avro", schema_registry_url=registry.url)
"""

from __future__ import annotations

import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from connector.devtools._http import BackgroundHttpServer

__all__ = ["SchemaRegistryServer"]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class _Store:
    """Schemas by id and subjects' version lists, behind one lock (the server is threaded)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[int, tuple[str, str]] = {}  # id -> (schema, schemaType)
        self.ids: dict[tuple[str, str], int] = {}
        self.subjects: dict[str, list[int]] = {}

    def register(self, subject: str, schema: str, schema_type: str) -> int:
        with self.lock:
            schema_id = self.ids.get((schema, schema_type))
            if schema_id is None:
                schema_id = self.ids[(schema, schema_type)] = len(self.by_id) + 1
                self.by_id[schema_id] = (schema, schema_type)
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read their own output, not an access log."""

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _parts(self) -> list[str]:
        return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/") if p]

    def do_GET(self) -> None:
        with self.server.store.lock:
            status, body = self._get(self._parts())
        self._send(status, body)

    def _get(self, parts: list[str]) -> tuple[int, Any]:
        store = self.server.store
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
            found = store.by_id.get(int(parts[2]))
            if found is None:
                return _not_found(40403, f"Schema {parts[2]} not found")
            schema, schema_type = found
            if schema_type == "AVRO":
                return HTTPStatus.OK, {"schema": schema}
            return HTTPStatus.OK, {"schema": schema, "schemaType": schema_type}
        if parts == ["subjects"]:
            return HTTPStatus.OK, sorted(store.subjects)
        if len(parts) in (3, 4) and parts[0] == "subjects" and parts[2] == "versions":
            versions = store.subjects.get(parts[1])
            if versions is None:
                return _not_found(40401, f"Subject '{parts[1]}' not found.")
            if len(parts) == 3:
                return HTTPStatus.OK, list(range(1, len(versions) + 1))
            if parts[3] == "latest":
                schema_id = versions[-1]
                schema = store.by_id[schema_id][0]
                return HTTPStatus.OK, {
                    "subject": parts[1],
                    "version": len(versions),
                    "id": schema_id,
                    "schema": schema,
                }
        return _not_found(404, "Not found")

    def do_POST(self) -> None:
        parts = self._parts()
        if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
            self._send(*_not_found(404, "Not found"))
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            schema, schema_type = body["schema"], body.get("schemaType") or "AVRO"
            if schema_type in ("AVRO", "JSON"):
                json.loads(schema)
        except (ValueError, KeyError, TypeError):
            self._send(HTTPStatus.UNPROCESSABLE_ENTITY, {"error_code": 42201, "message": "Invalid schema"})
            return
        self._send(HTTPStatus.OK, {"id": self.server.store.register(parts[1], schema, schema_type)})


def _not_found(code: int, message: str) -> tuple[int, Any]:
    return HTTPStatus.NOT_FOUND, {"error_code": code, "message": message}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: _Store) -> None:
        self.store = store
        super().__init__(address, _Handler)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class SchemaRegistryServer(BackgroundHttpServer):
    """The registry on a free loopback port, in a background thread; a context manager."""

    thread_name = "schema-registry"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port or _free_port(host))
        self._store = _Store()

    def _make_server(self) -> _Server:
        return _Server((self.host, self.port), self._store)

    def register(self, subject: str, schema: str | dict[str, Any], schema_type: str = "AVRO") -> int:
        """Register directly (no HTTP round trip); same ids as ``POST .../versions``."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        return self._store.register(subject, text, schema_type)
