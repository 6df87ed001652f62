"""Every RPC x every role x {own company, other company, no company scope}, generated from the permission
table and the services' descriptors, against the real server through real keys.

A new RPC without an entry in `service/api/permissions.py` fails `test_every_rpc_has_a_permission_entry`;
one with an entry is exercised by the matrix with no test edit.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

import consofta.billing.v1 as billing_v1
import grpc
import pytest
from consofta.billing.v1 import wallet_service_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.api.permissions import PERMISSIONS, authorize
from service.domain.errors import PermissionDenied
from service.domain.principals import Grant, Principal, Role
from service.server import SERVICE_NAMES, BillingServer
from tests.security.conftest import MakeKey, bearer

OWN, OTHER = "own-co", "other-co"
REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def contract_methods() -> dict[str, MethodDescriptor]:
    """Every method of every service in the contract package, by full name ("/pkg.Service/Method")."""
    methods: dict[str, MethodDescriptor] = {}
    for module in pkgutil.iter_modules(billing_v1.__path__):
        if not module.name.endswith("_pb2"):
            continue
        descriptor = importlib.import_module(f"consofta.billing.v1.{module.name}").DESCRIPTOR
        for service in descriptor.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method
    return methods


METHODS = contract_methods()


def test_every_rpc_has_a_permission_entry_and_every_entry_an_rpc() -> None:
    assert len(METHODS) >= 20
    missing = sorted(set(METHODS) - set(PERMISSIONS))
    assert not missing, f"add these RPCs to service/api/permissions.py: {missing}"
    stale = sorted(set(PERMISSIONS) - set(METHODS))
    assert not stale, f"these permission entries name no RPC: {stale}"
    # The server serves exactly the contract's services.
    assert {name.rpartition("/")[0].strip("/") for name in METHODS} == set(SERVICE_NAMES)


def test_a_method_missing_from_the_table_is_refused_even_to_admin() -> None:
    admin = Principal("key:test", Grant(Role.ADMIN))
    with pytest.raises(PermissionDenied):
        authorize(admin, "/consofta.billing.v1.UsageService/NotInTheTable", object())


@dataclass(frozen=True)
class Case:
    method: str
    role: Role
    scoped: bool  # the key is bound to OWN
    company: str  # the request's company_id ("" with all_companies)
    all_companies: bool = False

    @property
    def admitted(self) -> bool:
        """What the table says, spelled out independently of authorize()."""
        rule = PERMISSIONS[self.method]
        if self.all_companies or rule.deployment_wide:
            return not self.scoped and self.role in rule.all_companies_roles
        return self.role in rule.roles and (not self.scoped or self.company == OWN)


def cases() -> list[Case]:
    found = []
    for method, descriptor in METHODS.items():
        has_company = "company_id" in descriptor.input_type.fields_by_name
        for role in Role:
            found.append(Case(method, role, scoped=True, company=OWN))
            found.append(Case(method, role, scoped=False, company=OWN))
            if has_company:
                found.append(Case(method, role, scoped=True, company=OTHER))
            if "all_companies" in descriptor.input_type.fields_by_name:
                found.append(Case(method, role, scoped=True, company="", all_companies=True))
                found.append(Case(method, role, scoped=False, company="", all_companies=True))
    return found


async def _code(channel: grpc.aio.Channel, case: Case, secret: str) -> grpc.StatusCode:
    descriptor = METHODS[case.method]
    request_class = message_factory.GetMessageClass(descriptor.input_type)
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    fields: dict[str, object] = {}
    if "company_id" in descriptor.input_type.fields_by_name:
        fields["company_id"] = case.company
    if case.all_companies:
        fields["all_companies"] = True
    request = request_class(**fields)
    serialize: Any = request_class.SerializeToString
    deserialize: Any = response_class.FromString
    try:
        if descriptor.server_streaming:
            stream: Any = channel.unary_stream(case.method, serialize, deserialize)
            async for _ in stream(request, metadata=bearer(secret), timeout=2):
                pass
        else:
            unary: Any = channel.unary_unary(case.method, serialize, deserialize)
            await unary(request, metadata=bearer(secret), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_every_rpc_every_role_own_other_and_no_company(
    secure_app: BillingServer, channel: grpc.aio.Channel, make_key: MakeKey
) -> None:
    admin = await make_key("admin")
    wallet = channel.unary_unary(
        "/consofta.billing.v1.WalletService/CreateWallet",
        request_serializer=wallet_service_pb2.CreateWalletRequest.SerializeToString,
        response_deserializer=wallet_service_pb2.CreateWalletResponse.FromString,
    )
    for company in (OWN, OTHER):
        await wallet(
            wallet_service_pb2.CreateWalletRequest(
                company_id=company, display_name=company, request_id=company
            ),
            metadata=bearer(admin),
        )
    keys = {
        (role, scoped): await make_key(role.value, [OWN] if scoped else None)
        for role in Role
        for scoped in (True, False)
    }
    matrix = cases()
    limit = asyncio.Semaphore(16)

    async def run(case: Case) -> grpc.StatusCode:
        async with limit:
            return await _code(channel, case, keys[(case.role, case.scoped)])

    codes = await asyncio.gather(*(run(case) for case in matrix))
    wrong = [
        (case, code)
        for case, code in zip(matrix, codes, strict=True)
        if (code in REFUSALS) == case.admitted
        or (not case.admitted and code != grpc.StatusCode.PERMISSION_DENIED)
    ]
    assert not wrong, "\n".join(f"{c} -> {code.name}" for c, code in wrong[:20])
    # The matrix is not vacuous: both outcomes occur, for every role.
    for role in Role:
        outcomes = {case.admitted for case in matrix if case.role == role}
        assert outcomes == {True, False} or role is Role.ADMIN
    assert sum(not case.admitted for case in matrix if case.company == OTHER) == sum(
        1 for case in matrix if case.company == OTHER
    )


async def test_reflection_lists_the_contract_services_for_a_principal_only(
    secure_app: BillingServer, channel: grpc.aio.Channel, make_key: MakeKey
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def listed(metadata: tuple[tuple[str, str], ...]) -> set[str]:
        replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]), metadata=metadata)]
        return {s.name for s in replies[0].list_services_response.service}

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await listed(())
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    services = await listed(bearer(await make_key("usage-writer", ["acme"])))
    assert set(SERVICE_NAMES) <= services


def test_a_request_over_several_companies_needs_every_one_in_scope() -> None:
    from service.api.permissions import Rule

    batch = "/consofta.billing.v1.UsageService/SomeBatch"
    PERMISSIONS[batch] = Rule(frozenset({Role.USAGE_WRITER}), target=lambda request: tuple(request))
    try:
        writer = Principal("key:w", Grant(Role.USAGE_WRITER, frozenset({"a", "b"})))
        authorize(writer, batch, ["a", "b", "a"])
        with pytest.raises(PermissionDenied, match="'c'"):
            authorize(writer, batch, ["a", "c"])
    finally:
        del PERMISSIONS[batch]
