"""A thin httpx wrapper: bearer auth, hub errors mapped back to HealthspaceError types."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from healthspace.core.enums import ExitCode
from healthspace.core.errors import (
    Conflict,
    Forbidden,
    HealthspaceError,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    Unauthorized,
)

_BY_STATUS: dict[int, type[HealthspaceError]] = {
    400: InvalidInput,
    401: Unauthorized,
    402: QuotaExceeded,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidInput,
}


class HubUnavailable(HealthspaceError):
    """The hub could not be reached or answered with a server error; worth retrying."""

    status_code = 503


def _error_from(response: httpx.Response) -> HealthspaceError:
    message, field = response.text or response.reason_phrase, None
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, dict):
        message, field = str(detail.get("message", message)), detail.get("field")
    elif isinstance(detail, str):
        message = detail
    if response.status_code >= 500:
        return HubUnavailable(f"hub error {response.status_code}: {message}")
    cls = _BY_STATUS.get(response.status_code, HealthspaceError)
    return cls(message, field=field)


CA_BUNDLE_ENV = "HEALTHSPACE_CA_BUNDLE"


class HubNotTrusted(HubUnavailable):
    """The hub's TLS certificate does not verify against the trust anchors in use.

    A configuration problem, not an outage: the message names the option that sets the
    CA bundle, and the CLI exits 2 instead of retrying.
    """

    exit_code = ExitCode.INVALID


@dataclass(frozen=True)
class _Trust:
    bundle: str | None  # None: the system trust store
    option: str  # the setting that chose it: the error's field
    label: str  # where that setting is made, for messages


# A process-wide choice made once by the service that read its configuration (``node serve
# --config``, the client's config file); it wins over the environment variable.
_configured: _Trust | None = None


def use_ca_bundle(bundle: str | os.PathLike[str] | None, option: str = "ca_bundle",
                  label: str | None = None) -> None:
    """Verify hubs against ``bundle`` from now on in this process (None: back to defaults).

    ``option`` names the setting in errors; ``label`` says where it is made
    (``ca_bundle in /etc/healthspace/nodes/a/node.toml``).
    """
    global _configured
    _configured = None if bundle is None else _Trust(os.fspath(bundle), option, label or option)


def _trust() -> _Trust:
    if _configured is not None:
        return _configured
    bundle = os.environ.get(CA_BUNDLE_ENV)
    return _Trust(bundle or None, CA_BUNDLE_ENV, CA_BUNDLE_ENV)


def tls_verify() -> ssl.SSLContext | bool:
    """How HTTPS hubs are verified: the CA bundle a service configured, else the PEM bundle
    named by ``$HEALTHSPACE_CA_BUNDLE`` (a private CA or a self-signed hub certificate), else
    the system trust store. Never off."""
    trust = _trust()
    if trust.bundle is None:
        return True
    if not os.path.isfile(trust.bundle):
        raise InvalidInput(f"{trust.label}={trust.bundle} does not exist", field=trust.option)
    try:
        return ssl.create_default_context(cafile=trust.bundle)
    except ssl.SSLError as exc:
        raise InvalidInput(f"{trust.label}={trust.bundle} holds no PEM certificate: {exc}",
                           field=trust.option) from exc


def _untrusted(exc: httpx.TransportError, base_url: str) -> HubNotTrusted | None:
    """A clear error when the failure was certificate verification, else None."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    trust = _trust()
    anchors = (f"the CA bundle {trust.bundle}" if trust.bundle
               else "the system trust store")
    reason = getattr(cause, "verify_message", None) or str(cause)
    return HubNotTrusted(
        f"the hub at {base_url} presented a certificate that {anchors} does not trust "
        f"({reason}); set {trust.label} to the PEM certificate of the CA that signed the "
        f"hub's certificate (for a self-signed hub, its hub.crt)", field=trust.option)


class Http:
    """Bearer-authenticated JSON calls to one hub."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                    verify=tls_verify())

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {"json": json, "params": params}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            untrusted = _untrusted(exc, self.base_url)
            if untrusted is not None:
                raise untrusted from exc
            raise HubUnavailable(f"cannot reach the hub at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response
