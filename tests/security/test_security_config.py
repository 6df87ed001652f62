"""The security settings fail closed: an open deployment must be asked for, and bad TLS files or identity
mappings stop the process at start with the variable named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from service.config import ConfigError, load_config
from service.domain.principals import Grant, Role
from service.security_config import SecurityConfigError, parse_identities
from service.server import start_server
from tests.support.certs import leaf
from tests.support.cli import run


def test_unset_auth_is_off_only_on_a_loopback_address() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        security = load_config({"BILLING_GRPC_HOST": host}).security
        assert (security.auth, security.auth_explicit, security.reflection) == ("off", False, "on")
    for host in ("0.0.0.0", "::", "10.1.2.3", "billing.internal"):
        with pytest.raises(ConfigError, match="BILLING_AUTH is not set and BILLING_GRPC_HOST="):
            load_config({"BILLING_GRPC_HOST": host})


def test_explicit_modes_are_obeyed_anywhere() -> None:
    required = load_config({"BILLING_GRPC_HOST": "0.0.0.0", "BILLING_AUTH": "required"}).security
    assert (required.auth_required, required.reflection) == (True, "authenticated")
    off = load_config({"BILLING_GRPC_HOST": "0.0.0.0", "BILLING_AUTH": "OFF"}).security
    assert (off.auth_required, off.auth_explicit) == (False, True)
    assert load_config({"BILLING_AUTH": "required", "BILLING_REFLECTION": "off"}).security.reflection == "off"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BILLING_AUTH": "yes"}, "BILLING_AUTH='yes' must be required or off"),
        ({"BILLING_REFLECTION": "maybe"}, "must be on, off or authenticated"),
        ({"BILLING_REFLECTION": "authenticated"}, "needs BILLING_AUTH=required"),
        ({"BILLING_TLS_CERT_FILE": "/nonexistent/cert.pem"}, "is not a readable file"),
    ],
)
def test_bad_security_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)


def test_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = leaf(ca, "localhost").write(tmp_path, "server")
    other_cert, _ = leaf(ca, "localhost").write(tmp_path, "other")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    ok = load_config(
        {
            "BILLING_TLS_CERT_FILE": str(cert),
            "BILLING_TLS_KEY_FILE": str(key),
            "BILLING_TLS_CLIENT_CA_FILE": str(ca_file),
        }
    ).security
    assert ok.tls and ok.mtls
    with pytest.raises(ConfigError, match="go together"):
        load_config({"BILLING_TLS_CERT_FILE": str(cert)})
    with pytest.raises(ConfigError, match="not a PEM certificate chain and its private key"):
        load_config({"BILLING_TLS_CERT_FILE": str(other_cert), "BILLING_TLS_KEY_FILE": str(key)})
    with pytest.raises(ConfigError, match="mTLS needs the server's TLS"):
        load_config({"BILLING_TLS_CLIENT_CA_FILE": str(ca_file)})
    with pytest.raises(ConfigError, match="holds no PEM CA certificate"):
        load_config(
            {
                "BILLING_TLS_CERT_FILE": str(cert),
                "BILLING_TLS_KEY_FILE": str(key),
                "BILLING_TLS_CLIENT_CA_FILE": str(key),
            }
        )
    identities = tmp_path / "identities.toml"
    identities.write_text('[[identity]]\ndns = "svc.internal"\nrole = "operator"\n')
    with pytest.raises(ConfigError, match="only verified with mTLS"):
        load_config({"BILLING_TLS_CLIENT_IDENTITIES_FILE": str(identities)})
    mapped = load_config(
        {
            "BILLING_TLS_CERT_FILE": str(cert),
            "BILLING_TLS_KEY_FILE": str(key),
            "BILLING_TLS_CLIENT_CA_FILE": str(ca_file),
            "BILLING_TLS_CLIENT_IDENTITIES_FILE": str(identities),
        }
    ).security
    assert dict(mapped.client_identities) == {("dns", "svc.internal"): Grant(Role.OPERATOR)}


def test_the_identity_mapping() -> None:
    text = """
        [[identity]]
        uri = "spiffe://consofta.internal/ns/prod/sa/usage-api"
        role = "usage-writer"

        [[identity]]
        dns = "dashboard.internal"
        role = "dashboard"
        companies = ["acme", "globex"]
    """
    assert parse_identities(text, "f") == {
        ("uri", "spiffe://consofta.internal/ns/prod/sa/usage-api"): Grant(Role.USAGE_WRITER),
        ("dns", "dashboard.internal"): Grant(Role.DASHBOARD, frozenset({"acme", "globex"})),
    }
    for bad, message in [
        ('[[identity]]\nrole = "admin"\n', "exactly one of uri or dns"),
        ('[[identity]]\ndns = "a"\nuri = "b"\nrole = "admin"\n', "exactly one of uri or dns"),
        ('[[identity]]\ndns = "a"\nrole = "root"\n', "role must be one of"),
        ('[[identity]]\ndns = "a"\nrole = "admin"\ncompanies = []\n', "non-empty list"),
        (
            '[[identity]]\ndns = "a"\nrole = "admin"\n[[identity]]\ndns = "a"\nrole = "finance"\n',
            "mapped twice",
        ),
        ('[[identity]]\ndns = "a"\nrole = "admin"\nsecret = "x"\n', "the keys are"),
        ("not toml at all [", "is not TOML"),
    ]:
        with pytest.raises(SecurityConfigError, match=message):
            parse_identities(bad, "f")


async def test_a_config_built_by_hand_cannot_serve_open_off_loopback(db_url: str) -> None:
    config = replace(load_config({}), grpc_host="0.0.0.0", grpc_port=0, metrics_port=None)
    with pytest.raises(ConfigError, match="BILLING_AUTH is not set"):
        await start_server(config, database_url=db_url)


async def test_serve_refuses_to_start_open_on_a_public_address() -> None:
    result = await run("serve", BILLING_GRPC_HOST="0.0.0.0")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "BILLING_AUTH is not set and BILLING_GRPC_HOST=0.0.0.0 is not a loopback address" in result.err


def test_an_api_key_in_a_log_line_is_scrubbed() -> None:
    from service.app.api_keys import new_secret
    from service.logs import REDACTED, redact_text

    secret = new_secret()
    assert redact_text(f"refused key {secret} twice") == f"refused key cbk_{REDACTED} twice"
