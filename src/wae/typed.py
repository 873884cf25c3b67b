"""Values from YAML or the command line made into the annotated types of a dataclass's fields, with messages that
stay one short line whatever the value (nested, shared, huge, a hostile ``__repr__``)."""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import fields
from typing import Any, Union

from .errors import ConfigError

__all__ = ["coerce", "names", "short", "to_dict", "type_name"]


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 5
_REPR.maxlevel = 2


def short(value) -> str:
    """``repr(value)`` cut to a few dozen characters, in time bounded whatever the value (nested, shared, huge)."""
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__
        return f"<{type(value).__name__}>"


def names(keys, limit: int = 8) -> str:
    """Sorted key names for a message: at most ``limit`` of them, each cut short."""
    names = sorted(short(k) if not isinstance(k, str) else (k if len(k) <= 40 else k[:39] + "…") for k in keys)
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def to_dict(obj) -> dict:
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, tuple):
            v = list(v)
        elif dataclasses.is_dataclass(v):
            v = to_dict(v)
        out[f.name] = v
    return out


def type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(value: Any, tp, where: str, build):
    """Convert ``value`` (from YAML or the command line) to the annotated type ``tp`` or raise ConfigError;
    ``build(cls, mapping, where)`` makes a nested dataclass."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where, build)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {short(value)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {short(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(coerce(v, a, where, build) for v, a in zip(value, args))
        inner = args[0] if args else Any
        seq = [coerce(v, inner, where, build) for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true/false, got {short(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {short(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {short(value)}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {short(value)}")
        try:
            out = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: expected a number, got {short(value)}") from None
        if math.isnan(out):
            raise ConfigError(f"{where}: NaN is not a valid value")
        return out
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {short(value)}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    return value
