"""YAML read within bounds and written plainly: configs, presets and ``--set`` values come from users and files, so
a read is bounded in characters, nesting and values after alias expansion ("billion laughs"), and every failure is
one :class:`~wae.errors.ConfigError`."""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConfigError

__all__ = ["MAX_YAML_CHARS", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "dump_yaml", "load_yaml", "safe_yaml"]


MAX_YAML_CHARS = 1_000_000
"""Longest YAML text read as a config (a run config is a few kilobytes)."""
MAX_YAML_NODES = 100_000
"""Most values a YAML document may stand for once its aliases are expanded (bounds nested-alias "bombs")."""


MAX_YAML_DEPTH = 100
"""Deepest nesting of YAML collections read as a config (a run config nests three levels)."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses collections nested beyond :data:`MAX_YAML_DEPTH` while composing, so that
    neither the recursion of the composer nor the scanner's work on deep flow nesting grows with the input."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise ConfigError(f"the YAML nests deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_nodes(root, what: str) -> int:
    """The number of nodes of ``root`` with every alias expanded, counted on the composed graph (each distinct node
    once, memoised) and refused beyond :data:`MAX_YAML_NODES`; a recursive alias is refused too."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            total = 1 + sum(size[id(k)] for k in kids)
            if total > MAX_YAML_NODES:
                raise ConfigError(f"{what}: the YAML expands to more than {MAX_YAML_NODES:,} values (nested aliases?)")
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_path:
            raise ConfigError(f"{what}: a YAML alias refers to itself (recursive data is not a config)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    return size[id(root)]


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def safe_yaml(text: str, what: str):
    """``yaml.safe_load`` with bounded time and memory: at most :data:`MAX_YAML_CHARS` characters, at most
    :data:`MAX_YAML_NODES` values after alias expansion, no recursion; every failure is one :class:`ConfigError`."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"{what}: {len(text):,} characters is too long for a config (at most {MAX_YAML_CHARS:,})")
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, what)
        return loader.construct_document(node)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") if str(e).startswith("the YAML nests") else e from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise ConfigError(f"{what}: not valid YAML ({first[:200]})") from None
    except RecursionError:
        raise ConfigError(f"{what}: the YAML is nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as e:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{what}: a value cannot be read ({str(e)[:120]})") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    try:
        with open(p, "rb") as f:  # never more than the limit into memory
            raw = f.read(MAX_YAML_CHARS * 4 + 1)
        if len(raw) > MAX_YAML_CHARS * 4:
            raise ConfigError(f"config file {p} is larger than a config can be ({MAX_YAML_CHARS:,} characters)")
        text = raw.decode("utf-8")
    except IsADirectoryError:
        raise ConfigError(f"config file {p} is a directory") from None
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    data = safe_yaml(text, str(p))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must hold a mapping (model:, data:, train:), got "
                          f"{type(data).__name__}")
    return data


def dump_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
