"""Who calls: a principal, its role and the companies it may touch.

A principal is an API key (`key:<key id>`) or a client certificate's identity (`mtls:<uri or dns>`).
The role names are part of the interface: keys and the identity mapping name them, and the permission
table (`service/api/permissions.py`) says what each may call.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    # Internal services that meter usage: record it, hold for it, price it, read the balance.
    USAGE_WRITER = "usage-writer"
    # The billing dashboard's backend: one company's reads, settings and card, statements, export.
    DASHBOARD = "dashboard"
    # Money in by hand: credits and corrections.
    FINANCE = "finance"
    # Support and on-call: read everything, watch every company's events.
    OPERATOR = "operator"
    # Everything.
    ADMIN = "admin"


ROLE_NAMES: tuple[str, ...] = tuple(role.value for role in Role)


def role_of(name: str) -> Role | None:
    try:
        return Role(name)
    except ValueError:
        return None


@dataclass(frozen=True)
class Grant:
    """What a principal may do: a role, over some companies (None: every company)."""

    role: Role
    companies: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.companies is not None and not self.companies:
            raise ValueError("a grant bound to companies names at least one (None means every company)")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    id: str
    grant: Grant

    @property
    def role(self) -> Role:
        return self.grant.role

    @property
    def companies(self) -> frozenset[str] | None:
        return self.grant.companies

    @property
    def spans_all_companies(self) -> bool:
        return self.grant.companies is None

    def may_touch(self, company_id: str) -> bool:
        return self.grant.companies is None or company_id in self.grant.companies


# The id recorded in audit trails for calls made while authentication is off.
UNAUTHENTICATED_PRINCIPAL_ID = "anonymous"
