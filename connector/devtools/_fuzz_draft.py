"""A message under mutation, and what a mutation is (private to the fuzzer).

A mutation works on the form of a part it understands: JSON parts as parsed trees, Avro parts
as records, and every part as bytes once rendered. A chain of mutations runs in stage order
(add parts, then structure, then bytes, then the message), so a structural change is made
before the bytes are touched and a byte-level one sees the final serialization.

Some shapes cannot live in a parsed tree: nesting past ``orjson.dumps``' 254 levels, integers
beyond 64 bits, ``NaN``, duplicate keys, malformed tokens. A mutation puts a marker string in
the tree where they go and gives the raw bytes to ``Draft.raw``; rendering splices them in.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from connector.devtools._fuzz_corpus import Corpus, Kind, Message, Seed, avro_encode

__all__ = ["ADD", "BYTES", "MESSAGE", "STRUCT", "Draft", "Mutation", "Spot", "dumps_any"]

ADD, STRUCT, BYTES, MESSAGE = 0, 1, 2, 3
"""Stages: add parts (headers), change structure, change bytes, change the message."""


@dataclass(frozen=True, slots=True)
class Mutation:
    """One named mutation: the seed kinds it applies to, how often it is drawn, and what it does."""

    name: str
    stage: int
    kinds: frozenset[Kind]
    weight: float
    apply: Callable[[Draft, random.Random], None]


def dumps_any(value: Any) -> bytes:
    """JSON for anything a tree may hold (the standard library writes big ints and NaN)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


class Spot:
    """One node of a JSON tree (the root included): read it, replace it, know its path."""

    def __init__(
        self, draft: Draft, part: str, holder: list[Any], container: Any, key: Any, path: tuple[Any, ...]
    ):
        self.draft, self.part, self.holder = draft, part, holder
        self.container, self.key, self.path = container, key, path

    def get(self) -> Any:
        return self.container[self.key]

    def set(self, value: Any) -> None:
        self.container[self.key] = value
        self.draft.parts[self.part] = self.holder[0]

    def remove(self) -> bool:
        """Delete the node from its object or array; False at the root."""
        if self.container is self.holder:
            return False
        del self.container[self.key]
        return True


class Draft:
    """A seed's message, part by part (``key``, ``value``, ``h0``...), being mutated."""

    def __init__(self, seed: Seed, corpus: Corpus, iteration: int = 0) -> None:
        self.seed, self.corpus = seed, corpus
        self.iteration = iteration
        """Where the message is in its run: a newer version than earlier iterations' is later."""
        m = seed.message
        self.topic = m.topic
        self.parts: dict[str, Any] = {}
        self.form: dict[str, str] = {}
        """``json`` (a parsed tree), ``avro`` (a record) or ``bytes`` (bytes or None)."""
        self.header_names: list[str] = []
        self.splices: dict[str, bytes] = {}
        self.style = "compact"
        avro = seed.avro
        structured = seed.kind in ("json", "wrapped", "avro")  # poison: large, bytes only
        if avro is not None and avro.key is not None:
            self._set("key", copy.deepcopy(avro.key), "avro")
        else:
            self._set_json("key", m.key, parse=structured and seed.kind != "avro")
        if avro is not None:
            self._set("value", copy.deepcopy(avro.value), "avro")
        else:
            self._set_json("value", m.value, parse=structured)
        for name, raw in m.headers:
            self.add_header(name, raw, parse=structured)

    def _set(self, part: str, value: Any, form: str) -> None:
        self.parts[part], self.form[part] = value, form

    def _set_json(self, part: str, raw: bytes | None, *, parse: bool) -> None:
        if parse and raw is not None:
            try:
                self._set(part, orjson.loads(raw), "json")
                return
            except orjson.JSONDecodeError:
                pass
        self._set(part, raw, "bytes")

    def add_header(self, name: str, raw: bytes | None, *, parse: bool = True) -> str:
        part = f"h{len(self.header_names)}"
        self.header_names.append(name)
        self._set_json(part, raw, parse=parse)
        return part

    # -- choosing what to change -------------------------------------------------------------

    def pick_part(self, rng: random.Random, form: str) -> str | None:
        """A part in ``form``: the value most often, then the key, then any header."""
        names = [p for p, f in self.form.items() if f == form and (form != "bytes" or self.parts[p])]
        if not names:
            return None
        weights = [12 if p == "value" else 3 if p == "key" else 2 for p in names]
        return rng.choices(names, weights)[0]

    def spot(
        self, rng: random.Random, *, part: str | None = None, where: Callable[[Any], bool] | None = None
    ) -> Spot | None:
        """A node of a JSON part (one ``where`` accepts, if given); nodes in a row
        (``after``/``before``) three times as often as the others."""
        part = part or self.pick_part(rng, "json")
        if part is None:
            return None
        holder = [self.parts[part]]
        spots: list[tuple[Any, Any, tuple[Any, ...]]] = [(holder, 0, ())]
        queue: list[tuple[Any, tuple[Any, ...]]] = [(holder[0], ())]
        while queue and len(spots) < 4000:
            node, path = queue.pop()
            items = (
                node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            )
            for k, child in items:
                spots.append((node, k, (*path, k)))
                if isinstance(child, dict | list):
                    queue.append((child, (*path, k)))
        if where is not None:
            spots = [s for s in spots if where(s[0][s[1]])]
            if not spots:
                return None
        weights = [3 if "after" in p or "before" in p else 1 for _, _, p in spots]
        container, key, path = rng.choices(spots, weights)[0]
        return Spot(self, part, holder, container, key, path)

    def payload(self) -> dict[str, Any] | None:
        """The Debezium envelope of the value: the tree (or its ``payload``), or the record."""
        value = self.parts.get("value")
        if self.form.get("value") not in ("json", "avro") or not isinstance(value, dict):
            return None
        inner = value.get("payload")
        if self.form["value"] == "json" and "schema" in value and isinstance(inner, dict):
            return inner
        return value

    def raw(self, data: bytes) -> str:
        """A marker to put in a tree where ``data`` goes, byte for byte, when rendered."""
        marker = f"@@fz{len(self.splices)}@@"
        self.splices[marker] = data
        return marker

    def value_of(self, value: Any) -> Any:
        """``value`` as a tree can hold it: through a marker when orjson cannot write it."""
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            return self.raw(str(value).encode())
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return self.raw(json.dumps(value).encode())
        return value

    # -- rendering ---------------------------------------------------------------------------

    def render(self) -> None:
        """Every part to bytes (idempotent): trees serialized, records encoded."""
        avro = self.seed.avro
        for part, form in list(self.form.items()):
            if form == "json":
                self.parts[part] = self._dumps(self.parts[part])
            elif form == "avro" and avro is not None:
                schema, schema_id = (
                    (avro.key_schema, avro.key_id) if part == "key" else (avro.value_schema, avro.value_id)
                )
                original = self.seed.message.key if part == "key" else self.seed.message.value
                try:
                    self.parts[part] = avro_encode(schema, self.parts[part], schema_id)
                except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
                    self.parts[part] = original  # the change did not fit the schema: no change
            self.form[part] = "bytes"

    def _dumps(self, tree: Any) -> bytes:
        if self.style == "ascii":
            text = json.dumps(tree, ensure_ascii=True, separators=(",", ":")).encode()
        elif self.style == "pretty":
            text = orjson.dumps(tree, option=orjson.OPT_INDENT_2)
        else:
            text = dumps_any(tree)
        for marker in reversed(self.splices):  # a splice may hold older markers: newest first
            quoted = b'"' + marker.encode() + b'"'
            if quoted in text:
                text = text.replace(quoted, self.splices[marker])
        return text

    def message(self) -> Message:
        self.render()
        headers = tuple((n, self.parts[f"h{i}"]) for i, n in enumerate(self.header_names))
        return Message(self.topic, self.parts["key"], self.parts["value"], headers)
