"""A small TOML writer: strings, bools, ints, floats, arrays, tables and arrays of tables are
all that manifests and ``model.toml`` files need (``tomllib`` only reads)."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from typing import Any

import numpy as np

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(i) for i in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(i)}" for k, i in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(i, Mapping) for i in v)


def _body(data: Mapping[str, Any], prefix: str, lines: list[str]) -> None:
    # Plain key/values first: after a [header] every key belongs to that table.
    for k, v in data.items():
        if not isinstance(v, Mapping) and not _is_table_array(v):
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in data.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, Mapping):
            lines.append("")
            lines.append(f"[{name}]")
            _body(v, name, lines)
        elif _is_table_array(v):
            for item in v:
                lines.append("")
                lines.append(f"[[{name}]]")
                _body(item, name, lines)


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Serialise nested mappings and lists to TOML; raises ``TypeError`` for other values.

    The text is parsed back with ``tomllib`` before it is returned, so a writer bug raises here
    instead of producing a manifest the server cannot read.
    """
    lines: list[str] = []
    _body(data, "", lines)
    text = "\n".join(lines).lstrip("\n") + "\n"
    tomllib.loads(text)
    return text
