"""Index entry metadata as JSON, never pickle: what pytx's CLI and HMA put in an index.

HMA indexes plain JSON values (integer content ids); those are written as they are.
python-threatexchange's CLI indexes ``[(collab name, FetchedSignalMetadata), ...]``
lists, where the metadata are dataclasses holding enums, sets and tuples. Those are
written as tagged JSON (:func:`encode`) and rebuilt by :func:`decode`, which only ever
creates:

* tuples, sets, frozensets, dicts with any encodable keys;
* members of :class:`enum.Enum` subclasses;
* instances of dataclasses that subclass one of :data:`DATACLASS_BASES` (pytx's
  metadata and opinion classes), with exactly their declared fields.

Classes are looked up by module and qualified name among modules *already imported*:
a file never makes anything be imported, and no constructor, ``__post_init__`` or
``__setstate__`` runs (fields are set as pickle would, minus pickle's arbitrary calls).
Anything else is refused with :class:`~tipline.errors.IndexCorruptError` on reading and
:class:`TypeError` on writing.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
import typing as t

from threatexchange.exchanges.fetch_state import (
    AggregateSignalOpinion,
    FetchedSignalMetadata,
    SignalOpinion,
)

from tipline.errors import IndexCorruptError

#: Dataclasses (and their subclasses) that entry metadata may hold.
DATACLASS_BASES: tuple[type, ...] = (FetchedSignalMetadata, SignalOpinion, AggregateSignalOpinion)
#: Nesting deeper than this is refused (a hostile file cannot exhaust the stack).
MAX_DEPTH = 64

_TAG = "$"


def is_plain_json(value: object, depth: int = 0) -> bool:
    """True when ``value`` survives ``json.dumps``/``loads`` unchanged (no tuples,
    sets, objects, non-string keys, NaN, or bool-vs-int ambiguity in keys)."""
    if depth > MAX_DEPTH:
        return False
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if type(value) is list:
        return all(is_plain_json(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and is_plain_json(v, depth + 1) for k, v in value.items())
    return False


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def encode(value: object, depth: int = 0) -> t.Any:
    """``value`` as tagged JSON (TypeError for what :func:`decode` would not rebuild)."""
    if depth > MAX_DEPTH:
        raise TypeError(f"metadata nested deeper than {MAX_DEPTH}")
    if isinstance(value, enum.Enum):
        return {_TAG: "enum", "class": _name(type(value)), "value": encode(value.value, depth + 1)}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError("metadata holds a non-finite float")
        return value
    if type(value) is list:
        return [encode(v, depth + 1) for v in value]
    if type(value) is tuple:
        return {_TAG: "tuple", "items": [encode(v, depth + 1) for v in value]}
    if type(value) in (set, frozenset):
        items = [encode(v, depth + 1) for v in t.cast(t.Iterable[object], value)]
        items.sort(key=lambda x: json.dumps(x, sort_keys=True))
        return {_TAG: type(value).__name__, "items": items}
    if type(value) is dict:
        pairs = [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]
        return {_TAG: "dict", "items": pairs}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not issubclass(cls, DATACLASS_BASES):
            raise TypeError(f"{cls.__qualname__} is not pytx signal metadata")
        fields = {
            f.name: encode(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)
        }
        return {_TAG: "dataclass", "class": _name(cls), "fields": fields}
    raise TypeError(f"cannot store {type(value).__qualname__} in index metadata")


def _loaded_class(name: object) -> type:
    if not isinstance(name, str) or ":" not in name:
        raise IndexCorruptError("index metadata names a class badly")
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name)  # never imports
    obj: object = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    if not isinstance(obj, type):
        raise IndexCorruptError(f"index metadata names {name}, which is not loaded")
    return obj


def _items(node: dict[str, t.Any]) -> list[t.Any]:
    items = node.get("items")
    if not isinstance(items, list):
        raise IndexCorruptError("index metadata: a collection without items")
    return items


def decode(node: t.Any, depth: int = 0) -> t.Any:
    """Rebuild what :func:`encode` wrote (IndexCorruptError for anything else)."""
    if depth > MAX_DEPTH:
        raise IndexCorruptError(f"index metadata nested deeper than {MAX_DEPTH}")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [decode(v, depth + 1) for v in node]
    if not isinstance(node, dict) or not isinstance(node.get(_TAG), str):
        raise IndexCorruptError("index metadata holds an untagged object")
    tag = node[_TAG]
    try:
        if tag == "tuple":
            return tuple(decode(v, depth + 1) for v in _items(node))
        if tag in ("set", "frozenset"):
            items = (decode(v, depth + 1) for v in _items(node))
            return set(items) if tag == "set" else frozenset(items)
        if tag == "dict":
            out: dict[t.Any, t.Any] = {}
            for pair in _items(node):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise IndexCorruptError("index metadata: a dict item is not a pair")
                out[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
            return out
        if tag == "enum":
            cls = _loaded_class(node.get("class"))
            if not issubclass(cls, enum.Enum):
                raise IndexCorruptError(f"{cls.__qualname__} is not an enum")
            return cls(decode(node.get("value"), depth + 1))
        if tag == "dataclass":
            return _dataclass(node, depth)
    except TypeError as exc:  # unhashable set members or dict keys
        raise IndexCorruptError(f"index metadata: {exc}") from None
    except ValueError as exc:  # an enum value the class does not have
        raise IndexCorruptError(f"index metadata: {exc}") from None
    raise IndexCorruptError(f"index metadata has an unknown tag {tag!r}")


def _dataclass(node: dict[str, t.Any], depth: int) -> object:
    cls = _loaded_class(node.get("class"))
    if not (dataclasses.is_dataclass(cls) and issubclass(cls, DATACLASS_BASES)):
        raise IndexCorruptError(f"{cls.__qualname__} is not pytx signal metadata")
    fields = node.get("fields")
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(fields, dict) or set(fields) != names:
        raise IndexCorruptError(f"index metadata: fields of {cls.__qualname__} do not match")
    obj = object.__new__(cls)
    for key, value in fields.items():
        object.__setattr__(obj, key, decode(value, depth + 1))
    return obj


def dump_entries(entries: list[t.Any]) -> tuple[str, bytes]:
    """``(section name, JSON bytes)`` of an index's entry metadata: ``entries_json``
    when plain JSON, else ``entries_tagged`` (TypeError for what cannot be stored)."""
    if is_plain_json(entries):
        section, value = "entries_json", t.cast(t.Any, entries)
    else:
        try:
            section, value = "entries_tagged", encode(entries)
        except TypeError as exc:
            raise TypeError(
                f"index entry metadata is stored as JSON (never pickle): {exc}"
            ) from None
    return section, json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")


def load_entries(sections: t.Mapping[str, t.Any]) -> list[t.Any]:
    """The entry metadata :func:`dump_entries` wrote (IndexCorruptError otherwise)."""
    import numpy as np

    tagged = "entries_tagged" in sections
    try:
        raw = bytes(np.asarray(sections["entries_tagged" if tagged else "entries_json"], np.uint8))
        loaded = json.loads(raw.decode("utf-8"))
    except KeyError:
        raise IndexCorruptError("index entry metadata is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise IndexCorruptError("index entry metadata is not JSON") from None
    entries = decode(loaded) if tagged else loaded
    if not isinstance(entries, list):
        raise IndexCorruptError("index entry metadata is not a list")
    return entries
