"""Where the hub URL and token come from: flags, then environment, then a config file."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from healthspace.core.errors import InvalidInput

ENV_HUB = "HEALTHSPACE_HUB"
ENV_TOKEN = "HEALTHSPACE_TOKEN"  # noqa: S105 - the name of a variable, not a secret
ENV_CONFIG = "HEALTHSPACE_CONFIG"


def config_path() -> Path:
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "healthspace" / "config.toml"


@dataclass(frozen=True)
class Connection:
    hub: str
    token: str


def resolve(hub: str | None = None, token: str | None = None) -> Connection:
    """Resolve the hub connection; a missing value names the flag that sets it."""
    file_values: dict[str, str] = {}
    path = config_path()
    if path.exists():
        try:
            file_values = {k: str(v) for k, v in tomllib.loads(path.read_text()).items()}
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"cannot parse config file {path}: {exc}", field="config") from exc
    hub = hub or os.environ.get(ENV_HUB) or file_values.get("hub")
    token = token or os.environ.get(ENV_TOKEN) or file_values.get("token")
    if not hub:
        raise InvalidInput(f"no hub URL: pass --hub, set {ENV_HUB} or 'hub' in {path}", field="hub")
    if not token:
        raise InvalidInput(
            f"no token: pass --token, set {ENV_TOKEN} or 'token' in {path}", field="token"
        )
    return Connection(hub=hub, token=token)
