"""The merged source columns a state row keeps, so the row can be re-mapped without its source.

A row's values are the mapping's output; its source columns are the input the mapping read:
the decoded source row of its table (``ChangeEvent.row``), merged across events like the
values are. With them a row can be brought to a new mapping by the same ``Mapper`` ingest uses
(``connector.ingest.remap``), however long ago its source row last changed
(docs/decisions/0025).

Encoding: the state row's ``"src"`` is a JSON *string* holding ``{"t":<table>,"c":{columns}}``
(and ``"m":[columns]`` for columns no event has supplied yet: an unchanged-TOAST placeholder
over no stored column; ``"f":{column: version}`` for columns filled from an older event).
Nested as a string, every quote inside is escaped, so source columns
named ``d``, ``m`` or ``mv`` cannot be mistaken for the row's own keys by the unparsed
readers (``codec.is_complete``, ``row_mapping_version``). Values the decoder typed (decimals,
dates, times, timestamps, bytes) are written as one-key objects tagged with a NUL-led key
(``{"\\u0000n":"1.50"}``) and restored on decode, so a re-mapped row sees exactly the Python
values ingest saw. The compiled path writes the same bytes for the rows it takes
(``fastpath/src/row.rs``: an untyped row whose numbers are all integers).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from connector.source.version import Version

__all__ = ["SourceColumns", "decode_source", "encode_source"]

_TAGS: dict[str, Callable[[str], Any]] = {
    "\x00n": Decimal,
    "\x00d": dt.date.fromisoformat,
    "\x00t": dt.datetime.fromisoformat,
}
_TIME, _BYTES = "\x00h", "\x00b"


@dataclass(frozen=True, slots=True)
class SourceColumns:
    """A source row as the decoder gave it (``columns``), of ``table``.

    Merged like the row's fields (``connector.state.resolve``): ``missing`` names columns no
    event has supplied yet (an unchanged-TOAST placeholder over no stored column), ``filled``
    the versions of columns whose value came from an older event than the row's (kept from the
    stored row, or filled by an older event), so an even older event never replaces them and an
    older delete drops them, exactly as for fields.
    """

    table: str
    columns: dict[str, Any]
    missing: frozenset[str] = frozenset()
    filled: dict[str, Version] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing

    def merged_over(
        self, stored: SourceColumns | None, stored_version: Version, unavailable: frozenset[str]
    ) -> SourceColumns:
        """These columns of a newer event, each ``unavailable`` one (unchanged TOAST) taken
        from ``stored`` (the live row's, at ``stored_version``), or missing."""
        if not unavailable:
            return self
        columns = dict(self.columns)
        missing: set[str] = set()
        filled: dict[str, Version] = {}
        for name in unavailable:
            if stored is not None and stored.table == self.table and name in stored.columns:
                columns[name] = stored.columns[name]
                filled[name] = stored.filled.get(name, stored_version)
            else:
                missing.add(name)
        return SourceColumns(self.table, columns, frozenset(missing), filled)

    def filled_from(self, older: SourceColumns, version: Version) -> SourceColumns | None:
        """Missing or older-filled columns filled from an older event's (at ``version``);
        None when it fills nothing (rule 1 of the merge)."""
        if older.table != self.table:
            return None
        names = self.missing | self.filled.keys()
        fill = {
            n: older.columns[n] for n in names if n in older.columns and self.filled.get(n, _OLDEST) < version
        }
        if not fill:
            return None
        return SourceColumns(
            self.table,
            {**self.columns, **fill},
            self.missing - fill.keys(),
            {**self.filled, **dict.fromkeys(fill, version)},
        )

    def dropped_before(self, version: Version) -> SourceColumns:
        """Columns filled from before an older delete at ``version`` dropped (rule 4)."""
        dropped = {n for n, v in self.filled.items() if v < version}
        if not dropped:
            return self
        return SourceColumns(
            self.table,
            {n: c for n, c in self.columns.items() if n not in dropped},
            self.missing | dropped,
            {n: v for n, v in self.filled.items() if n not in dropped},
        )


_OLDEST = Version(-1, -1, -1, -1, -1)


def _tag(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"\x00n": str(value)}
    if isinstance(value, dt.datetime):
        return {"\x00t": value.isoformat()}
    if isinstance(value, dt.date):
        return {"\x00d": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TIME: value.isoformat()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES: base64.b64encode(bytes(value)).decode()}
    raise TypeError(type(value).__name__)


def encode_source(source: SourceColumns) -> str:
    """The text of a row's ``"src"`` (compact JSON; ``"m"`` only when columns are missing)."""
    doc: dict[str, Any] = {"t": source.table, "c": source.columns}
    if source.missing:
        doc["m"] = sorted(source.missing)
    if source.filled:
        doc["f"] = {name: list(v) for name, v in source.filled.items()}
    return orjson.dumps(doc, default=_tag, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def _untag(value: Any) -> Any:
    if type(value) is dict and len(value) == 1:
        ((name, text),) = value.items()
        restore = _TAGS.get(name)
        if restore is not None:
            return restore(text)
        if name == _TIME:
            return dt.time.fromisoformat(text)
        if name == _BYTES:
            return base64.b64decode(text)
    return value


def decode_source(text: str) -> SourceColumns:
    """Inverse of ``encode_source``: typed values restored (top-level columns only: the
    decoder types top-level columns only)."""
    doc = orjson.loads(text)
    columns = {name: _untag(value) for name, value in doc["c"].items()}
    filled = {name: Version(*v) for name, v in doc.get("f", {}).items()}
    return SourceColumns(doc["t"], columns, frozenset(doc.get("m", ())), filled)
