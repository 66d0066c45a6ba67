"""The one config loader: YAML files in, plain dicts out, errors that name the field.

Typed configs are dataclasses elsewhere; they call ``load_yaml`` and the
``field_*`` readers here so that every config error reads the same way:
``FILE: FIELD: problem. Fix: ...`` and exits with code 2.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from onboard.errors import ConfigError

_MISSING = object()


def load_yaml(path: str | Path, what: str = "config") -> dict:
    """Read a YAML mapping. Missing file, parse errors or a non-mapping raise ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found", file=str(path),
                          fix=f"check the path; shipped {what}s live under config/")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what}: {exc}", file=str(path),
                          fix="pass a readable UTF-8 YAML file") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown position)"
        raise ConfigError(f"malformed YAML at {where}: {getattr(exc, 'problem', exc)}",
                          file=str(path), field=where,
                          fix="correct the YAML syntax (indentation, colons, brackets)") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(doc).__name__}",
                          file=str(path), field="<root>", fix="write the file as key: value pairs")
    return doc


def field(doc: dict, key: str, *, file: str | Path | None, default: Any = _MISSING,
          kind: type | tuple | None = None, prefix: str = "") -> Any:
    """Read ``doc[key]`` with a clear error when it is missing or has the wrong type."""
    name = f"{prefix}{key}"
    if key not in doc or doc[key] is None:
        if default is not _MISSING:
            return default
        raise ConfigError("required field is missing", file=None if file is None else str(file),
                          field=name, fix=f"add '{key}:' to the file")
    value = doc[key]
    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise ConfigError(f"expected {names}, got {type(value).__name__} ({value!r})",
                              file=None if file is None else str(file), field=name,
                              fix=f"set '{key}' to a {names}")
    return value


def float_list(doc: dict, key: str, *, file: str | Path | None, length: int | None = None,
               default: Any = _MISSING, prefix: str = "") -> list[float]:
    """A list of finite floats (optionally of a fixed length)."""
    value = field(doc, key, file=file, default=default, prefix=prefix)
    if value is default and default is not _MISSING:
        return value
    name = f"{prefix}{key}"
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"expected a list of numbers, got {type(value).__name__}",
                          file=None if file is None else str(file), field=name,
                          fix=f"write '{key}: [a, b, ...]'")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"element {i} is {v!r}, not a finite number",
                              file=None if file is None else str(file), field=f"{name}[{i}]",
                              fix="use finite numbers only")
        out.append(float(v))
    if length is not None and len(out) != length:
        raise ConfigError(f"expected {length} values, got {len(out)}",
                          file=None if file is None else str(file), field=name,
                          fix=f"give exactly {length} values")
    return out
