"""Layered settings: defaults < TOML file < environment < command-line flags, errors by key.

A service's settings are one pydantic model. The loader reads the file, turns variables
``<PREFIX><KEY>`` (``__`` between nested keys, e.g. ``HEALTHSPACE_HUB_TLS__CERTFILE``) into the
same shape, lays the flags the user actually gave on top and validates once. Every error names
the key and where its value came from (the file, the variable or the flag), so an operator can
fix a unit file or a config without reading a traceback.
"""

from __future__ import annotations

import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from healthspace.core.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)

# Variables that share a prefix but belong to other tools (the test suite's hub backend).
RESERVED_ENV = frozenset({"HEALTHSPACE_HUB_TEST_DB"})


def read_toml(path: Path) -> dict[str, Any]:
    """The file's table; a missing or unparsable file is an error naming it."""
    if not path.is_file():
        raise InvalidInput(f"config file {path} does not exist", field="config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot parse config file {path}: {exc}", field="config") from exc


def _section(annotation: Any) -> type[BaseModel] | None:
    """The nested model a field holds (``TlsConfig`` or ``TlsConfig | None``), if any."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _is_path(annotation: Any) -> bool:
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return Path in candidates


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """The model's keys as written in files (aliases where set) -> annotation."""
    return {(info.alias or name): info.annotation for name, info in model.model_fields.items()}


def env_values(model: type[BaseModel], prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """``PREFIX_A__B=v`` -> ``{"a": {"b": "v"}}``; a variable naming no key is an error."""
    values: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(prefix) or name in RESERVED_ENV:
            continue
        parts = name[len(prefix):].lower().split("__")
        target, current = values, model
        for depth, part in enumerate(parts):
            annotation = _keys(current).get(part)
            if annotation is None:
                stem = prefix + "".join(p.upper() + "__" for p in parts[:depth])
                known = ", ".join(stem + k.upper() for k in _keys(current))
                raise InvalidInput(f"no such setting (known: {known})", field=name)
            if depth == len(parts) - 1:
                target[part] = _parse_env(environ[name], annotation)
                break
            section = _section(annotation)
            if section is None:
                raise InvalidInput(f"{name}: {part} has no nested keys", field=name)
            target = target.setdefault(part, {})
            current = section
    return values


def _parse_env(text: str, annotation: Any) -> Any:
    """Lists come as a JSON array or comma-separated; everything else as the text itself."""
    origin = typing.get_origin(annotation)
    if origin is list or any(typing.get_origin(a) is list for a in typing.get_args(annotation)):
        if text.strip().startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def resolve_paths(model: type[BaseModel], values: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a file are relative to that file's folder, not the working dir."""
    out = dict(values)
    for key, annotation in _keys(model).items():
        value = out.get(key)
        section = _section(annotation)
        if section is not None and isinstance(value, dict):
            out[key] = resolve_paths(section, value, base)
        elif _is_path(annotation) and isinstance(value, str) and value:
            path = Path(value).expanduser()
            out[key] = str(path if path.is_absolute() else base / path)
    return out


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win, key by key; nested tables merge instead of replacing each other."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def load(
    model: type[M],
    *,
    prefix: str,
    path: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> M:
    """Validate defaults < ``path`` < ``prefix`` variables < ``flags`` into ``model``.

    ``flags`` holds only options the user gave (dotted keys allowed: ``{"tls.certfile": p}``);
    ``flag_names`` maps a key to its option (``port`` -> ``--port``) for messages.
    """
    environ = os.environ if environ is None else environ
    file_layer: dict[str, Any] = {}
    if path is not None:
        file_layer = resolve_paths(model, read_toml(path), path.resolve().parent)
    env_layer = env_values(model, prefix, environ)
    flag_layer: dict[str, Any] = {}
    for key, value in (flags or {}).items():
        if value is not None:
            flag_layer = merge(flag_layer, _nest(key.split("."), value))
    try:
        return model.model_validate(merge(file_layer, env_layer, flag_layer))
    except ValidationError as exc:
        raise _explain(exc, prefix=prefix, path=path, env=env_layer, flags=flag_layer,
                       flag_names=flag_names or {}) from exc


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    return {parts[0]: value} if len(parts) == 1 else {parts[0]: _nest(parts[1:], value)}


def _has(layer: Mapping[str, Any], parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(layer, Mapping) or part not in layer:
            return False
        layer = layer[part]
    return True


def _explain(exc: ValidationError, *, prefix: str, path: Path | None, env: dict[str, Any],
             flags: dict[str, Any], flag_names: Mapping[str, str]) -> InvalidInput:
    """The first problem, naming the dotted key (the error's field) and its value's source."""
    error = exc.errors(include_url=False)[0]
    parts = [str(p) for p in error["loc"] if not isinstance(p, int)]
    key = ".".join(parts) or "config"
    env_name = prefix + "__".join(p.upper() for p in parts)
    file_name = f"config file {path}" if path is not None else "the config file"
    if error["type"] == "extra_forbidden":
        where = env_name if _has(env, parts) else file_name
        return InvalidInput(f"unknown key {key!r} in {where}", field=key)
    if error["type"] == "missing":
        sources = [f"{key} in {file_name}", env_name]
        if key in flag_names:
            sources.append(flag_names[key])
        return InvalidInput(f"not set: give {', '.join(sources[:-1])} or {sources[-1]}",
                            field=key)
    if _has(flags, parts):
        where = flag_names.get(key, key)
    elif _has(env, parts):
        where = env_name
    else:
        where = file_name
    message = str(error["msg"]).removeprefix("Value error, ")
    return InvalidInput(f"{message} (from {where})", field=key)
