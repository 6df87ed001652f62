"""TLS and mTLS on the real server, with certificates made in the test: the client's TlsConfig (the
README's example), client certificates that fail the handshake (unknown CA, expired, none), identities
that map to a principal or to nothing, and a certificate rotated on disk without a restart."""

from __future__ import annotations

import datetime
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
import trustme
from consofta.billing.client import (
    NO_RETRY,
    AsyncBillingClient,
    PermissionDenied,
    TlsConfig,
    Unauthenticated,
    nanos_of,
)
from consofta.billing.client import Unavailable as ClientUnavailable
from consofta.billing.v1 import wallet_service_pb2, wallet_service_pb2_grpc
from google.type import money_pb2

from service.api.auth import UNMAPPED_CERTIFICATE
from service.app.api_keys import create_key
from service.domain.principals import Grant, Role
from service.server import BillingServer, start_server
from tests.security.conftest import auth_config
from tests.support.certs import Pem, leaf, uri_leaf

USAGE_API = "spiffe://consofta.test/ns/prod/sa/usage-api"
DASHBOARD_HOST = "dashboard.consofta.test"
IDENTITIES = {
    ("uri", USAGE_API): Grant(Role.USAGE_WRITER),
    ("dns", DASHBOARD_HOST): Grant(Role.DASHBOARD, frozenset({"acme"})),
}


@dataclass
class Pki:
    folder: Path
    ca: trustme.CA
    cert_file: Path
    key_file: Path
    ca_file: Path

    def client(self, pem: Pem, ca: trustme.CA | None = None) -> TlsConfig:
        return TlsConfig(
            root_ca_pem=(ca or self.ca).cert_pem.bytes(), client_cert_pem=pem.cert, client_key_pem=pem.key
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    cert_file, key_file = leaf(ca, "localhost", "127.0.0.1").write(tmp_path, "server")
    ca_file = tmp_path / "client-ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    return Pki(tmp_path, ca, cert_file, key_file, ca_file)


async def _serve(db_url: str, pki: Pki, mtls: bool) -> BillingServer:
    config = auth_config(
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        tls_client_ca_file=pki.ca_file if mtls else None,
        client_identities=IDENTITIES if mtls else {},
    )
    return await start_server(config, database_url=db_url)  # type: ignore[arg-type]


@pytest.fixture
async def tls_app(db_url: str, pki: Pki) -> AsyncIterator[BillingServer]:
    running = await _serve(db_url, pki, mtls=False)
    yield running
    await running.stop(grace_s=1)


@pytest.fixture
async def mtls_app(db_url: str, pki: Pki) -> AsyncIterator[BillingServer]:
    running = await _serve(db_url, pki, mtls=True)
    yield running
    await running.stop(grace_s=1)


async def _admin(pool: asyncpg.Pool) -> str:
    return (await create_key(pool, "ops", "admin", None, "test")).secret


async def test_tls_with_the_clients_tlsconfig_and_a_key(
    tls_app: BillingServer, pki: Pki, pool: asyncpg.Pool
) -> None:
    target = f"127.0.0.1:{tls_app.port}"
    tls = TlsConfig(root_ca_pem=pki.ca.cert_pem.bytes())
    async with AsyncBillingClient(target, tls=tls, bearer_token=await _admin(pool)) as billing:
        created = await billing.create_wallet("acme", "Acme Inc", idempotency_key="create-acme")
        assert created.wallet.company_id == "acme"
    # Plaintext to the TLS port does not get through, nor does TLS without a key.
    async with AsyncBillingClient(target, retry=NO_RETRY, timeout_s=2) as plaintext:
        with pytest.raises(ClientUnavailable):
            await plaintext.get_wallet("acme")
    async with AsyncBillingClient(target, tls=tls) as keyless:
        with pytest.raises(Unauthenticated):
            await keyless.get_wallet("acme")


async def test_the_readme_mtls_example(
    mtls_app: BillingServer, pki: Pki, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc_cert, svc_key = uri_leaf(pki.ca, USAGE_API).write(pki.folder, "svc")
    (pki.folder / "ca.pem").write_bytes(pki.ca.cert_pem.bytes())
    admin = await _admin(pool)
    admin_tls = pki.client(leaf(pki.ca, "ops.consofta.test"))
    async with AsyncBillingClient(f"127.0.0.1:{mtls_app.port}", tls=admin_tls, bearer_token=admin) as ops:
        await ops.create_wallet("acme", "Acme Inc", idempotency_key="create-acme")
    token = (await create_key(pool, "usage-api", "usage-writer", None, "test")).secret
    monkeypatch.chdir(pki.folder)  # the example names the files as if they were beside it

    tls = TlsConfig.from_files(root_ca="ca.pem", client_cert="svc.pem", client_key="svc.key")
    async with AsyncBillingClient(f"127.0.0.1:{mtls_app.port}", tls=tls, bearer_token=token) as billing:
        reply = await billing.record_call("acme", "inbound", "toll_free", 61, idempotency_key="call-42")
        assert (reply.usage_record.price.billable_units, nanos_of(reply.balance_after), reply.replayed) == (
            2,
            -44_000_000,
            False,
        )
    assert svc_cert.exists() and svc_key.exists()


async def test_a_mapped_certificate_identity_is_a_principal_without_a_key(
    mtls_app: BillingServer, pki: Pki, pool: asyncpg.Pool
) -> None:
    target = f"127.0.0.1:{mtls_app.port}"
    async with AsyncBillingClient(
        target, tls=pki.client(leaf(pki.ca, "ops.test")), bearer_token=await _admin(pool)
    ) as ops:
        for company in ("acme", "globex"):
            await ops.create_wallet(company, company, idempotency_key=f"create-{company}")
    async with AsyncBillingClient(target, tls=pki.client(uri_leaf(pki.ca, USAGE_API))) as usage_api:
        await usage_api.record_email("acme", 10, idempotency_key="e1")
        with pytest.raises(PermissionDenied):
            await usage_api.call(
                usage_api.wallet.CreditWallet,
                wallet_service_pb2.CreditWalletRequest(
                    company_id="acme",
                    request_id="c1",
                    amount=money_pb2.Money(currency_code="USD", units=5),
                    reason="r",
                ),
            )
    async with AsyncBillingClient(target, tls=pki.client(leaf(pki.ca, DASHBOARD_HOST))) as dashboard:
        assert (await dashboard.get_wallet("acme")).wallet.company_id == "acme"
        with pytest.raises(PermissionDenied):
            await dashboard.get_wallet("globex")
    async with AsyncBillingClient(target, tls=pki.client(leaf(pki.ca, "stranger.consofta.test"))) as stranger:
        with pytest.raises(Unauthenticated) as unmapped:
            await stranger.get_wallet("acme")
        assert UNMAPPED_CERTIFICATE in str(unmapped.value)


async def _handshake_code(target: str, tls: TlsConfig | None) -> grpc.StatusCode:
    credentials = (tls or TlsConfig()).channel_credentials() if tls else grpc.ssl_channel_credentials()
    async with grpc.aio.secure_channel(target, credentials) as channel:
        try:
            await wallet_service_pb2_grpc.WalletServiceStub(channel).GetWallet(
                wallet_service_pb2.GetWalletRequest(company_id="acme"), timeout=3
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_certificates_the_server_must_refuse_fail_the_handshake(
    mtls_app: BillingServer, pki: Pki
) -> None:
    target = f"127.0.0.1:{mtls_app.port}"
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    refused = {
        "no client certificate": TlsConfig(root_ca_pem=pki.ca.cert_pem.bytes()),
        "unknown CA": TlsConfig(
            root_ca_pem=pki.ca.cert_pem.bytes(),
            client_cert_pem=(other := leaf(trustme.CA(), DASHBOARD_HOST)).cert,
            client_key_pem=other.key,
        ),
        "expired": pki.client(
            leaf(
                pki.ca, DASHBOARD_HOST, not_before=yesterday - datetime.timedelta(days=1), not_after=yesterday
            )
        ),
    }
    codes = {name: await _handshake_code(target, tls) for name, tls in refused.items()}
    assert codes == dict.fromkeys(refused, grpc.StatusCode.UNAVAILABLE)
    # The same channel set-up with a good certificate gets through to the permission check.
    assert (
        await _handshake_code(target, pki.client(leaf(pki.ca, DASHBOARD_HOST))) is grpc.StatusCode.NOT_FOUND
    )


async def test_a_certificate_rotated_on_disk_is_served_without_a_restart(
    tls_app: BillingServer, pki: Pki, pool: asyncpg.Pool
) -> None:
    target = f"127.0.0.1:{tls_app.port}"
    admin = await _admin(pool)
    old = TlsConfig(root_ca_pem=pki.ca.cert_pem.bytes())

    async def reaches(tls: TlsConfig) -> bool:
        async with AsyncBillingClient(
            target, tls=tls, bearer_token=admin, retry=NO_RETRY, timeout_s=3
        ) as client:
            try:
                await client.create_wallet("acme", "Acme", idempotency_key="create-acme")
            except ClientUnavailable:
                return False
        return True

    assert await reaches(old)
    new_ca = trustme.CA()
    # Written beside and renamed into place, as cert-manager and most rotations do.
    staged_cert, staged_key = leaf(new_ca, "localhost", "127.0.0.1").write(pki.folder, "staged")
    os.replace(staged_key, pki.key_file)
    os.replace(staged_cert, pki.cert_file)
    assert tls_app.certificates is not None
    loads = tls_app.certificates.loads
    new = TlsConfig(root_ca_pem=new_ca.cert_pem.bytes())
    assert await reaches(new)
    assert not await reaches(old)
    assert tls_app.certificates.loads == loads + 1


def test_sighup_forces_a_reread_and_a_half_written_pair_is_not_taken(pki: Pki) -> None:
    from service.api.transport import CertificateFiles

    files = CertificateFiles(pki.cert_file, pki.key_file, pki.ca_file)
    assert files.fetch() is None  # nothing changed
    files.reload()  # what SIGHUP calls
    assert files.fetch() is not None and files.loads == 2
    assert files.fetch() is None
    # The new certificate is in place but its key is not yet: keep serving the old pair.
    new = leaf(trustme.CA(), "localhost", "127.0.0.1")
    pki.cert_file.write_bytes(new.cert)
    assert files.fetch() is None and files.loads == 2
    pki.key_file.write_bytes(new.key)
    assert files.fetch() is not None and files.loads == 3
