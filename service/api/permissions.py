"""Who may call what: the one table from every RPC to the roles that may call it, and the company scope.

Every RPC of every service has an entry; `tests/security/test_permission_matrix.py` reads the services'
descriptors and fails for a method without one, so a new RPC cannot ship open. A method missing here
is refused to everyone, admin included (fail closed).

Company scope. A principal bound to companies may touch only those: for another company's id it gets
PERMISSION_DENIED, decided from the principal's own scope before anything is read, so the answer is the
same whether that company exists or not and reveals nothing about it. (NOT_FOUND would hide a
misconfigured key behind "no such company" for no secrecy gained.) A request over every company (the
all-companies event stream) needs a principal bound to none, and a role allowed to span them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from service.domain.errors import PermissionDenied
from service.domain.principals import Principal, Role


class _AllCompanies:
    def __repr__(self) -> str:
        return "ALL_COMPANIES"


ALL_COMPANIES: Final = _AllCompanies()
# The company a request touches (its company_id), the companies it touches (a batch: each item's), or
# ALL_COMPANIES.
Target = str | tuple[str, ...] | _AllCompanies


def company_of(request: Any) -> Target:
    return str(request.company_id)


def _batch_target(request: Any) -> Target:
    # Every item's company must be in scope: one item for another company refuses the whole call.
    return tuple(str(item.company_id) for item in request.items)


def _watch_target(request: Any) -> Target:
    return ALL_COMPANIES if request.all_companies else str(request.company_id)


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role]
    target: Callable[[Any], Target] = company_of
    # Roles that may make the request over every company (`target` gives ALL_COMPANIES).
    all_companies_roles: frozenset[Role] = frozenset()
    # Every request of the method spans all companies (deployment-wide state, e.g. webhook endpoints).
    deployment_wide: bool = False


def _rule(
    *roles: Role, target: Callable[[Any], Target] = company_of, all_companies: tuple[Role, ...] = ()
) -> Rule:
    # Admin may call everything.
    return Rule(frozenset((*roles, Role.ADMIN)), target, frozenset((*all_companies, Role.ADMIN)))


W, D, F, OPS = Role.USAGE_WRITER, Role.DASHBOARD, Role.FINANCE, Role.OPERATOR
# Reading one company's wallet, usage, settings and card: the dashboard shows them, finance decides
# credits from them, operators answer support questions with them.
READERS = (D, F, OPS)
_USAGE = "/consofta.billing.v1.UsageService/"
_WALLET = "/consofta.billing.v1.WalletService/"
_SETTINGS = "/consofta.billing.v1.SettingsService/"
_WEBHOOKS = "/consofta.billing.v1.WebhookService/"


def _deployment(_request: Any) -> Target:
    return ALL_COMPANIES


# Outbound webhooks send events out of the service, and an endpoint may receive every company's: only
# operators (and admin) bound to no company manage them.
_HOOKS = Rule(frozenset((OPS, Role.ADMIN)), _deployment, frozenset((OPS, Role.ADMIN)), deployment_wide=True)

PERMISSIONS: Final[dict[str, Rule]] = {
    # Metering services record what was used; nothing else writes usage.
    _USAGE + "RecordUsage": _rule(W),
    _USAGE + "RecordUsageBatch": _rule(W, target=_batch_target),
    _USAGE + "ListUsageRecords": _rule(*READERS),
    _USAGE + "GetUsageSummary": _rule(*READERS),
    # Metering services price before they act (and show a price to their users).
    _USAGE + "GetRateCard": _rule(W, *READERS),
    _USAGE + "EstimateCost": _rule(W, *READERS),
    # Opening a billing account is a finance act; the dashboard cannot create companies.
    _WALLET + "CreateWallet": _rule(F),
    # Metering services read the balance to decide whether to start a call.
    _WALLET + "GetWallet": _rule(W, *READERS),
    _WALLET + "ListWalletTransactions": _rule(*READERS),
    # Money in by hand: finance only (the dashboard's card flow recharges through Stripe instead).
    _WALLET + "CreditWallet": _rule(F),
    # The corrections: money out by hand, and taking back (part of) a usage charge.
    _WALLET + "DebitWallet": _rule(F),
    _WALLET + "VoidUsageRecord": _rule(F),
    # Holds belong to the metering flow: reserve before a call, release when it does not happen.
    _WALLET + "AuthorizeUsage": _rule(W),
    _WALLET + "ReleaseHold": _rule(W),
    _WALLET + "ExtendHold": _rule(W),
    # One company's events for its dashboard; every company's only for operators (and admin).
    _WALLET + "WatchWalletEvents": _rule(*READERS, target=_watch_target, all_companies=(OPS,)),
    _WALLET + "GetStatement": _rule(*READERS),
    _WALLET + "ExportWalletTransactions": _rule(*READERS),
    _SETTINGS + "GetBillingSettings": _rule(*READERS),
    # The company's own billing settings are changed from its dashboard; finance raises a minimum or a
    # cap above its approval level (service/domain/settings.py), which the dashboard may not.
    _SETTINGS + "UpdateBillingSettings": _rule(D, F),
    _SETTINGS + "ListSettingsChanges": _rule(*READERS),
    # The SetupIntent's client secret goes to the dashboard's Stripe.js and nowhere else.
    _SETTINGS + "StartCardSetup": _rule(D),
    _SETTINGS + "SetDefaultCard": _rule(D),
    _SETTINGS + "GetCard": _rule(*READERS),
    _SETTINGS + "RemoveCard": _rule(D),
    _WEBHOOKS + "CreateWebhookEndpoint": _HOOKS,
    _WEBHOOKS + "ListWebhookEndpoints": _HOOKS,
    _WEBHOOKS + "DisableWebhookEndpoint": _HOOKS,
    _WEBHOOKS + "ListWebhookDeliveries": _HOOKS,
    _WEBHOOKS + "RedeliverWebhookDelivery": _HOOKS,
}

# Infrastructure outside the table: health is open to all (load balancers call it without keys);
# reflection follows BILLING_REFLECTION (service/security_config.py).
HEALTH_PREFIX = "/grpc.health."
REFLECTION_PREFIX = "/grpc.reflection."


def _short(method: str) -> str:
    return method.rpartition("/")[2] or method


def authorize(principal: Principal, method: str, request: Any) -> None:
    """Return if `principal` may make this call; raise PermissionDenied otherwise."""
    rule = PERMISSIONS.get(method)
    if rule is None:
        raise PermissionDenied(
            f"{_short(method)[:80]} is not open to any role", metadata={"method": method[:120]}
        )
    if principal.role not in rule.roles:
        raise PermissionDenied(
            f"role {principal.role} may not call {_short(method)}",
            metadata={"role": principal.role.value, "method": method},
        )
    target = rule.target(request)
    if isinstance(target, _AllCompanies):
        if not principal.spans_all_companies or principal.role not in rule.all_companies_roles:
            raise PermissionDenied(
                f"{_short(method)} over every company needs an operator or admin principal bound to "
                "no company",
                metadata={"role": principal.role.value, "method": method},
            )
        return
    for company in (target,) if isinstance(target, str) else target:
        # An empty company id touches no company: the servicer reports it as INVALID_ARGUMENT.
        if company and not principal.may_touch(company):
            raise PermissionDenied(
                f"this principal may not act for company {company[:64]!r}",
                metadata={"company_id": company[:64]},
            )
