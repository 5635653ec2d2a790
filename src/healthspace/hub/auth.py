"""Bearer-token authentication and the role checks each endpoint declares beside itself.

Every ``/api/v1`` route depends on exactly one :class:`Permission` (``require(...)``,
``require_node()`` or ``require_any()``); :func:`permission_table` reads them back from the
routers, so tests and docs can walk every route × role without a second, drifting list.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from healthspace.core.enums import PrincipalKind, Role
from healthspace.core.errors import Forbidden, Unauthorized
from healthspace.hub.deps import get_hub
from healthspace.hub.principal import Principal
from healthspace.hub.services.tokens import authenticate

_bearer = HTTPBearer(auto_error=False, description="hs_… token issued by the hub")


class Permission:
    """A dependency that authenticates the caller and admits only the listed principals.

    ``note`` documents finer scoping enforced in the service (e.g. "own organisation only").
    """

    def __init__(self, roles: frozenset[Role], *, node: bool = False, note: str = "") -> None:
        self.roles = roles
        self.node = node
        self.note = note

    def allows(self, kind: PrincipalKind, role: Role | None) -> bool:
        if kind == PrincipalKind.NODE:
            return self.node
        return role is not None and role in self.roles

    def describe(self) -> str:
        who = sorted(str(role) for role in self.roles) + (["node"] if self.node else [])
        return ", ".join(who)

    def __call__(
        self,
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        if credentials is None or not credentials.credentials:
            raise Unauthorized("missing bearer token (Authorization: Bearer hs_…)")
        with get_hub(request).sessions() as session:
            principal = authenticate(session, credentials.credentials)
        if principal is None:
            raise Unauthorized("invalid or revoked token")
        if not self.allows(principal.kind, principal.role):
            who = principal.role or principal.kind
            raise Forbidden(f"this endpoint needs one of: {self.describe()} (you are {who})")
        return principal


def require(*roles: Role, note: str = "") -> Permission:
    """Users holding one of ``roles``; nodes are refused."""
    return Permission(frozenset(roles), note=note)


def require_user(note: str = "") -> Permission:
    """Any human/service user, whatever the role; nodes are refused."""
    return Permission(frozenset(Role), note=note)


def require_node() -> Permission:
    """Only enrolled nodes."""
    return Permission(frozenset(), node=True)


def require_any(note: str = "") -> Permission:
    """Any authenticated principal."""
    return Permission(frozenset(Role), node=True, note=note)


def route_permission(route: APIRoute) -> Permission | None:
    """The Permission a route depends on, found by walking its dependency tree."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Permission):
            return dep.call
        stack.extend(dep.dependencies)
    return None


def permission_table(
    routers: Iterable[APIRouter], prefix: str = ""
) -> dict[tuple[str, str], Permission | None]:
    """``(METHOD, path) -> Permission`` for every route of ``routers`` (None: unauthenticated)."""
    table: dict[tuple[str, str], Permission | None] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                for method in sorted(route.methods or ()):
                    table[(method, prefix + route.path)] = route_permission(route)
    return table
