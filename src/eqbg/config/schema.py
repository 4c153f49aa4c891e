"""JSON schemas generated from settings: a settings dataclass becomes the schema of its config
section, so that no key is declared twice.

A dataclass field's JSON type comes from its annotation (``int``, ``float``, ``bool``, ``str``,
``X | None``, ``tuple``, a nested settings dataclass), its description from the ``#:`` comment
beside it (on its line or the lines above), as Sphinx reads them. A dict-typed field may name
the settings class its keys come from in ``field(metadata={"settings": cls})``. Values are checked by the
settings' own ``validate`` when the workflow resolves every run (:mod:`eqbg.config.check`).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

__all__ = ["field_docs", "type_schema", "settings_schema"]

_FIELD = re.compile(r"^\s+(\w+)\s*:[^=]+(=.*)?$")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: documentation}`` from the ``#:`` comments of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = _FIELD.match(line.split("  #:")[0]) if not stripped.startswith(("def ", "@")) else None
            if match:
                inline = line.split("#:", 1)[1].strip() if "#:" in line else ""
                doc = " ".join(pending + ([inline] if inline else []))
                if doc:
                    docs[match.group(1)] = doc
            pending = []
    return docs


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON schema of values of the Python type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [type_schema(arg) for arg in typing.get_args(tp)]
        return {"anyOf": options}
    if tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is tuple:
        args = typing.get_args(tp)
        schema: dict[str, Any] = {"type": "array"}
        if args and args[-1] is not Ellipsis:
            schema.update(minItems=len(args), maxItems=len(args))
        if args:
            schema["items"] = type_schema(args[0])
        return schema
    if origin in (list,) or tp is list:
        return {"type": "array"}
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return {"type": "object"}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return settings_schema(tp)
    return {}


def settings_schema(cls: type, description: str | None = None) -> dict[str, Any]:
    """The schema of a config section holding the settings dataclass ``cls``: each field a
    property of its type, no other key."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        schema = type_schema(hints[f.name])
        keys_from = f.metadata.get("settings")
        if keys_from is not None:
            schema = {"anyOf": [settings_schema(keys_from), {"type": "null"}]}
        if f.name in docs:
            schema = {**schema, "description": docs[f.name]}
        properties[f.name] = schema
    doc = description or (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    return {
        "description": f"{doc} ({cls.__module__}.{cls.__qualname__})",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
