"""The security settings: authentication, reflection, TLS and the client-certificate identity mapping.

Part of the configuration (`service/config.py` reads them through `security_from_env`), kept apart
because each rule here decides whether the service is open. The rules, all failing closed:
- `BILLING_AUTH=required|off`. Unset means off only while the gRPC server binds a loopback address
  (a development machine: nothing else can reach it); on any other address an unset BILLING_AUTH stops
  the process at start, so a deployment is never open by accident. `off` said explicitly is obeyed.
- `BILLING_REFLECTION=on|off|authenticated`: by default `on` while auth is off and `authenticated` when
  it is required (grpcurl with a key still lists and describes the services).
- TLS needs a certificate and its key; mTLS (`BILLING_TLS_CLIENT_CA_FILE`) needs TLS; the identity
  mapping needs mTLS. Each file is read and parsed at start, so a bad one stops the process with its
  variable named, instead of failing on the first handshake.
"""

from __future__ import annotations

import ipaddress
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from service.domain.principals import ROLE_NAMES, Grant, Role

AuthMode = Literal["required", "off"]
ReflectionMode = Literal["on", "off", "authenticated"]
# Keys of the identity mapping: the kind of subject alternative name and its value.
URI_IDENTITY = "uri"
DNS_IDENTITY = "dns"


class SecurityConfigError(ValueError):
    """One bad security setting; str() names the variable (config.py reports it as a ConfigError)."""


@dataclass(frozen=True)
class SecurityConfig:
    # What load_config({}) gives on its default loopback address: auth off, said by no one. The server
    # refuses that on any other address (`exposure_problem`), also for a Config built by hand.
    auth: AuthMode = "off"
    auth_explicit: bool = False
    reflection: ReflectionMode = "on"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # ("uri" or "dns", the SAN's value) -> what a client certificate with that identity may do.
    client_identities: Mapping[tuple[str, str], Grant] = field(default_factory=dict)

    @property
    def auth_required(self) -> bool:
        return self.auth == "required"

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def mtls(self) -> bool:
        return self.tls_client_ca_file is not None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name we cannot vouch for counts as reachable from elsewhere


def exposure_problem(host: str, security: SecurityConfig) -> str | None:
    """Why serving on `host` with these settings would leave the service open by accident, or None."""
    if security.auth_required or security.auth_explicit or is_loopback(host):
        return None
    return (
        f"BILLING_AUTH is not set and BILLING_GRPC_HOST={host} is not a loopback address: set "
        "BILLING_AUTH=required (callers then need an API key or a mapped client certificate), or "
        "BILLING_AUTH=off to serve without authentication on purpose"
    )


def _file(get: Callable[[str], str | None], name: str) -> Path | None:
    raw = get(name)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise SecurityConfigError(f"{name}={raw!r} is not a readable file")
    return path


def _tls_files(get: Callable[[str], str | None]) -> tuple[Path | None, Path | None, Path | None]:
    cert = _file(get, "BILLING_TLS_CERT_FILE")
    key = _file(get, "BILLING_TLS_KEY_FILE")
    client_ca = _file(get, "BILLING_TLS_CLIENT_CA_FILE")
    if (cert is None) != (key is None):
        raise SecurityConfigError(
            "BILLING_TLS_CERT_FILE and BILLING_TLS_KEY_FILE go together: set both or none"
        )
    if client_ca is not None and cert is None:
        raise SecurityConfigError(
            "BILLING_TLS_CLIENT_CA_FILE is set but BILLING_TLS_CERT_FILE is not: mTLS needs the server's TLS"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError):
            raise SecurityConfigError(
                "BILLING_TLS_CERT_FILE and BILLING_TLS_KEY_FILE are not a PEM certificate chain and its "
                "private key"
            ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError):
            raise SecurityConfigError("BILLING_TLS_CLIENT_CA_FILE holds no PEM CA certificate") from None
    return cert, key, client_ca


def parse_identities(text: str, source: str) -> dict[tuple[str, str], Grant]:
    """The identity mapping, from TOML:

    [[identity]]
    uri = "spiffe://consofta.internal/ns/prod/sa/usage-api"   # or: dns = "dashboard.internal"
    role = "usage-writer"
    companies = ["acme"]                                       # optional: every company if absent
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SecurityConfigError(f"{source} is not TOML: {error}") from None
    entries = document.get("identity", [])
    if set(document) - {"identity"} or not isinstance(entries, list):
        raise SecurityConfigError(f"{source} must hold only [[identity]] tables")
    mapping: dict[tuple[str, str], Grant] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"{source}, identity #{number}"
        if not isinstance(entry, dict) or set(entry) - {URI_IDENTITY, DNS_IDENTITY, "role", "companies"}:
            raise SecurityConfigError(f"{where}: the keys are uri or dns, role and companies")
        kinds = [kind for kind in (URI_IDENTITY, DNS_IDENTITY) if kind in entry]
        if len(kinds) != 1 or not isinstance(entry[kinds[0]], str) or not entry[kinds[0]].strip():
            raise SecurityConfigError(f"{where}: give exactly one of uri or dns, a non-empty string")
        role = entry.get("role")
        if role not in ROLE_NAMES:
            raise SecurityConfigError(f"{where}: role must be one of {', '.join(ROLE_NAMES)}")
        companies = entry.get("companies")
        if companies is not None and (
            not isinstance(companies, list)
            or not companies
            or not all(isinstance(c, str) and c and not any(ch.isspace() for ch in c) for c in companies)
        ):
            raise SecurityConfigError(f"{where}: companies must be a non-empty list of company ids")
        identity = (kinds[0], entry[kinds[0]].strip())
        if identity in mapping:
            raise SecurityConfigError(f"{where}: {identity[0]} {identity[1]!r} is mapped twice")
        mapping[identity] = Grant(Role(role), None if companies is None else frozenset(companies))
    return mapping


def security_from_env(get: Callable[[str], str | None], grpc_host: str) -> SecurityConfig:
    """`get(name)` is the variable's value, None when unset or blank."""
    raw_auth = get("BILLING_AUTH")
    if raw_auth is not None and raw_auth.lower() not in ("required", "off"):
        raise SecurityConfigError(f"BILLING_AUTH={raw_auth!r} must be required or off")
    auth: AuthMode = "required" if raw_auth is not None and raw_auth.lower() == "required" else "off"
    raw_reflection = get("BILLING_REFLECTION")
    reflection: ReflectionMode
    if raw_reflection is None:
        reflection = "authenticated" if auth == "required" else "on"
    elif raw_reflection.lower() in ("on", "off", "authenticated"):
        reflection = raw_reflection.lower()  # type: ignore[assignment]
    else:
        raise SecurityConfigError(f"BILLING_REFLECTION={raw_reflection!r} must be on, off or authenticated")
    if reflection == "authenticated" and auth == "off":
        raise SecurityConfigError("BILLING_REFLECTION=authenticated needs BILLING_AUTH=required")
    cert, key, client_ca = _tls_files(get)
    identities_file = _file(get, "BILLING_TLS_CLIENT_IDENTITIES_FILE")
    identities: dict[tuple[str, str], Grant] = {}
    if identities_file is not None:
        if client_ca is None:
            raise SecurityConfigError(
                "BILLING_TLS_CLIENT_IDENTITIES_FILE is set but BILLING_TLS_CLIENT_CA_FILE is not: client "
                "certificates are only verified with mTLS"
            )
        identities = parse_identities(
            identities_file.read_text(encoding="utf-8"), "BILLING_TLS_CLIENT_IDENTITIES_FILE"
        )
    security = SecurityConfig(
        auth=auth,
        auth_explicit=raw_auth is not None,
        reflection=reflection,
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=client_ca,
        client_identities=identities,
    )
    problem = exposure_problem(grpc_host, security)
    if problem is not None:
        raise SecurityConfigError(problem)
    return security
