"""The hub's and the node's settings (``hub.toml``, ``node.toml``) and how they are loaded.

Precedence, highest first: command-line flag, environment variable, config file, default.
Variables are ``HEALTHSPACE_HUB_<KEY>`` and ``HEALTHSPACE_NODE_<KEY>``, nested keys joined by
``__`` (``HEALTHSPACE_HUB_TLS__CERTFILE``, ``HEALTHSPACE_NODE_STORE__URL``). Unknown keys and
bad values are errors naming the key and the file or variable they came from. Relative paths
in a file are relative to the file's folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from healthspace.core.errors import InvalidInput
from healthspace.core.limits import DEFAULT_MIN_CELL, MIN_CELL_FLOOR
from healthspace.core.logs import LOG_LEVELS
from healthspace.deploy.loader import load

HUB_ENV_PREFIX = "HEALTHSPACE_HUB_"
NODE_ENV_PREFIX = "HEALTHSPACE_NODE_"
HUB_CONFIG_NAME = "hub.toml"
NODE_CONFIG_NAME = "node.toml"

LogFormat = Literal["text", "json"]


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {value!r} (one of {', '.join(LOG_LEVELS).lower()})")
    return value.lower()


def _existing_file(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise ValueError(f"{path} does not exist")
    return path


class TlsConfig(_Strict):
    """The hub's certificate (PEM, chain first) and private key; both or neither."""

    certfile: Path | None = None
    keyfile: Path | None = None

    _files = field_validator("certfile", "keyfile")(_existing_file)

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsConfig:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("give both tls.certfile and tls.keyfile, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.certfile is not None


class HubConfig(_Strict):
    """Everything ``hub serve`` needs; ``hub init --dir`` writes a filled-in ``hub.toml``."""

    db: str = Field(description="SQLAlchemy URL of the hub database")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    webhooks: list[str] = Field(default_factory=list)
    max_body_mb: int = Field(64, ge=1, description="refuse request bodies above this (MB)")
    platform_fee: float = Field(10.0, ge=0, le=50, description="percent kept at settlement")
    currency: str = "CNY"
    sla_sweep: float = Field(60.0, ge=0, description="seconds between SLA checks; 0: on read")
    log_level: str = "info"
    log_format: LogFormat = "text"

    _level = field_validator("log_level")(_log_level)

    @field_validator("db")
    @classmethod
    def _url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(f"{value!r} is not a database URL (sqlite:///PATH or "
                             "postgresql+psycopg://USER@HOST/DB)")
        return value

    @field_validator("currency")
    @classmethod
    def _iso4217(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("a currency is a three-letter ISO 4217 code, e.g. CNY")
        return value

    @field_validator("webhooks")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook {url!r} is not an http(s) URL")
        return value

    @property
    def url(self) -> str:
        """The hub's base URL on its own interface (for health checks on the machine)."""
        scheme = "https" if self.tls.enabled else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"{scheme}://{host}:{self.port}"


class StoreConfig(_Strict):
    """Where the node's CDM is: its DuckDB file, or the data holder's PostgreSQL / Spark."""

    engine: Literal["duckdb", "postgresql", "spark"] = "duckdb"
    path: Path | None = None
    url: str | None = None
    schema_: str | None = Field(None, alias="schema")
    parquet: Path | None = None

    @model_validator(mode="after")
    def _engine_fields(self) -> StoreConfig:
        from healthspace.core.errors import InvalidInput

        if self.engine == "duckdb" and self.path is None:
            return self  # required, but reported by the loader with the key's sources
        try:
            self.spec().validate()
        except InvalidInput as exc:
            raise ValueError(f"store.{exc.field}: {exc.message}") from exc
        return self

    def spec(self) -> Any:
        """The :class:`healthspace.cdm.engines.StoreSpec` the node agent opens."""
        from healthspace.cdm.engines import StoreSpec

        return StoreSpec(engine=self.engine, path=self.path, url=self.url,
                         schema=self.schema_, parquet=self.parquet)


class NodeConfig(_Strict):
    """Everything ``node serve`` needs; ``node init --dir`` writes a filled-in ``node.toml``."""

    hub_url: str | None = None
    token_file: Path | None = None
    token: SecretStr | None = Field(None, description="inline token; prefer token_file")
    ca_bundle: Path | None = Field(None, description="PEM CA bundle that verifies the hub")
    state: Path | None = Field(None, description="default: beside the DuckDB store")
    store: StoreConfig = Field(default_factory=lambda: StoreConfig.model_validate({}))
    policy: Path | None = None
    hub_key: str | None = Field(None, description="pin this hub public key (hex)")
    poll_wait: float = Field(20.0, gt=0, le=60)
    min_cell_size: int = Field(DEFAULT_MIN_CELL, ge=MIN_CELL_FLOOR)
    log_level: str = "info"
    log_format: LogFormat = "text"

    _level = field_validator("log_level")(_log_level)
    _files = field_validator("ca_bundle", "policy")(_existing_file)

    @field_validator("hub_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("hub_key")
    @classmethod
    def _hex_key(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value.strip().lower()):
            raise ValueError("a hub key is 64 hex digits (GET /api/v1/hub/key)")
        return value.strip().lower() if value is not None else None

    def state_path(self) -> Path:
        """The node's state file: as configured, else beside the DuckDB store."""
        from healthspace.cdm.store import state_path

        if self.state is not None:
            return self.state
        assert self.store.path is not None  # a duckdb store always has one (validated)
        return state_path(self.store.path)


HUB_FLAGS = {"db": "--db", "host": "--host", "port": "--port", "log_level": "--log-level",
             "log_format": "--log-format", "webhooks": "--webhook",
             "tls.certfile": "--ssl-certfile", "tls.keyfile": "--ssl-keyfile",
             "max_body_mb": "--max-body-mb", "platform_fee": "--platform-fee",
             "currency": "--currency", "sla_sweep": "--sla-sweep"}
NODE_FLAGS = {"hub_url": "--hub", "token": "--token", "store.path": "--store",
              "ca_bundle": "--ca-bundle", "policy": "--policy", "hub_key": "--hub-key",
              "poll_wait": "--poll-wait", "min_cell_size": "--min-cell-size",
              "log_level": "--log-level", "log_format": "--log-format"}


def load_hub_config(path: Path | None = None, flags: Mapping[str, Any] | None = None,
                    environ: Mapping[str, str] | None = None) -> HubConfig:
    """The hub's settings: flags > ``HEALTHSPACE_HUB_*`` > ``path`` > defaults."""
    return load(HubConfig, prefix=HUB_ENV_PREFIX, path=path, flags=flags, environ=environ,
                flag_names=HUB_FLAGS)


def load_node_config(path: Path | None = None, flags: Mapping[str, Any] | None = None,
                     environ: Mapping[str, str] | None = None) -> NodeConfig:
    """The node's settings: flags > ``HEALTHSPACE_NODE_*`` > ``path`` > defaults."""
    config = load(NodeConfig, prefix=NODE_ENV_PREFIX, path=path, flags=flags, environ=environ,
                  flag_names=NODE_FLAGS)
    _check_node(config, path)
    return config


def _check_node(config: NodeConfig, path: Path | None) -> None:
    """Rules across keys, each error naming the key to set."""
    where = f"config file {path}" if path else "the config file"
    if config.store.engine == "duckdb" and config.store.path is None:
        raise InvalidInput(f"no store: give store.path in {where}, "
                           f"{NODE_ENV_PREFIX}STORE__PATH or --store", field="store.path")
    if config.state is None and config.store.engine != "duckdb":
        raise InvalidInput(f"a {config.store.engine} node keeps its state in a file of its own: "
                           f"give state in {where} or {NODE_ENV_PREFIX}STATE", field="state")
    if config.token is not None and config.token_file is not None:
        raise InvalidInput(f"give token or token_file, not both ({where}, "
                           f"{NODE_ENV_PREFIX}TOKEN, --token)", field="token")
