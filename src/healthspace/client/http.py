"""A thin httpx wrapper: bearer auth, hub errors mapped back to HealthspaceError types."""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx

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


def tls_verify() -> ssl.SSLContext | bool:
    """How HTTPS hubs are verified: the system trust store, or the PEM bundle named by
    ``$HEALTHSPACE_CA_BUNDLE`` (a private CA or a self-signed hub certificate). Never off."""
    bundle = os.environ.get(CA_BUNDLE_ENV)
    if not bundle:
        return True
    if not os.path.isfile(bundle):
        raise InvalidInput(f"{CA_BUNDLE_ENV}={bundle} does not exist", field=CA_BUNDLE_ENV)
    return ssl.create_default_context(cafile=bundle)


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
            raise HubUnavailable(f"cannot reach the hub at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response
