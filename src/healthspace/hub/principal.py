"""Who is calling: a user (with role and organisation) or an enrolled node."""

from __future__ import annotations

from dataclasses import dataclass

from healthspace.core.enums import OrgKind, PrincipalKind, Role
from healthspace.core.models import Me


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: int
    name: str
    org_id: int
    org: str
    org_kind: OrgKind
    role: Role | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == Role.OPERATOR

    def has_role(self, *roles: Role) -> bool:
        return self.role is not None and self.role in roles

    def me(self) -> Me:
        return Me(id=self.id, name=self.name, kind=self.kind, role=self.role, org=self.org)
