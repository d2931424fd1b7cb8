"""Parameter dataclasses built from plain mappings: the one path for run-config sections and for
every method's parameters. An unknown key or a value of the wrong type is one UserError line
naming the key; range checks stay in each dataclass's `validate`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from certify.errors import UserError
from certify.validation import shown


def for_dataset(table: dict[str, Any], dataset: str, default: Any = None) -> Any:
    """The entry of a per-dataset table for `dataset` or, for `NAME:...` specs, for NAME."""
    return table.get(dataset, table.get(dataset.split(":", 1)[0], default))


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def coerce(value: Any, tp: Any, key: str, where: str = "config") -> Any:
    """Check `value` against the annotation `tp`; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, key, where)
            except UserError:
                pass
        allowed = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise UserError(f"{where}: {key} must be {allowed}, got {shown(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise UserError(f"{where}: {key} must be null, got {shown(value)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: {key} must be a list, got {shown(value)}")
        return [coerce(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: {key} must be a mapping, got {shown(value)}")
        args = typing.get_args(tp)
        return {k: coerce(v, args[1], f"{key}.{k}", where) for k, v in value.items()} if args else value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: {key} must be a number, got {shown(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise UserError(f"{where}: {key} must be a finite number, got {shown(value)}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: {key} must be an integer, got {shown(value)}")
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise UserError(f"{where}: {key} must be {_type_name(tp)}, got {shown(value)}")
        return value
    raise TypeError(f"unsupported parameter type {tp} for {key}")


def from_dict(cls, data: Any, where: str = "config", prefix: str = ""):
    """Build dataclass `cls` from the mapping `data`, each value checked against its field's type."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: {prefix or 'parameters'} must be a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UserError(f"{where}: unknown key {full!r}; allowed: {', '.join(names)}")
        kwargs[key] = coerce(value, hints[key], full, where)
    return cls(**kwargs)
