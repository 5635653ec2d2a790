"""Where the hub URL and token come from: flags, then environment, then a config file.

The same file may keep the token in a file of its own (``token_file``, mode 0600) and name the
CA bundle that verifies an HTTPS hub (``ca_bundle``); both are relative to the config file's
folder. ``$HEALTHSPACE_CA_BUNDLE`` wins over ``ca_bundle``.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from healthspace.client.http import CA_BUNDLE_ENV, use_ca_bundle
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
    if file_values.get("ca_bundle") and not os.environ.get(CA_BUNDLE_ENV):
        use_ca_bundle(_beside(path, file_values["ca_bundle"]), label=f"ca_bundle in {path}")
    hub = hub or os.environ.get(ENV_HUB) or file_values.get("hub")
    token = token or os.environ.get(ENV_TOKEN) or file_values.get("token")
    if not token and file_values.get("token_file"):
        token = _read_token(_beside(path, file_values["token_file"]), path)
    if not hub:
        raise InvalidInput(f"no hub URL: pass --hub, set {ENV_HUB} or 'hub' in {path}", field="hub")
    if not token:
        raise InvalidInput(
            f"no token: pass --token, set {ENV_TOKEN} or 'token' in {path}", field="token"
        )
    return Connection(hub=hub, token=token)


def _beside(config: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else config.parent / path


def _read_token(path: Path, config: Path) -> str:
    """A token file named by the config; refused when other users can read it."""
    where = f"token_file in {config}"
    if not path.is_file():
        raise InvalidInput(f"{where}: {path} does not exist", field="token_file")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InvalidInput(f"{where}: {path} is readable by other users (mode {mode:04o}); "
                           f"chmod 600 {path}", field="token_file")
    return path.read_text(encoding="utf-8").strip()
