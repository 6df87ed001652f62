"""Where outbound webhooks may go: the deployment's allow-list (`BILLING_WEBHOOK_ALLOWED_HOSTS`).

An entry is a host name (`hooks.example.com`), a suffix wildcard (`*.example.com`, any name below it but
not the name itself), an IP address (`127.0.0.1`, `::1`), a network (`10.1.0.0/16`), or `*` (any host
whose addresses are all public). Unset or empty: no outbound webhooks at all (fail closed).

A URL passes when
* its host matches an entry (`*` matches every name), and
* every address it resolves to is public (globally routable), or lies in a listed address or network:
  a name on the list that resolves to a private, loopback or link-local address is refused unless that
  address is listed too, so a listed name whose DNS answer changes cannot reach an internal service;
* it is https, unless its host is listed exactly (a name, an address or a network, not a wildcard):
  plain http only to a host chosen by name, e.g. a receiver on 127.0.0.1 in development.

Checked when an endpoint is registered and again before every delivery, after resolving the name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
MAX_URL_CHARS = 2048


class HostListError(ValueError):
    """An entry of the allow-list that is not a name, a wildcard, an address or a network."""


@dataclass(frozen=True)
class AllowedHosts:
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"
    networks: tuple[IpNetwork, ...] = ()
    any_public: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.names or self.suffixes or self.networks or self.any_public)

    def _literal(self, host: str) -> IpAddress | None:
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            return None

    def listed_exactly(self, host: str) -> bool:
        address = self._literal(host)
        if address is not None:
            return any(address in network for network in self.networks)
        return host in self.names

    def host_matches(self, host: str) -> bool:
        if self.listed_exactly(host):
            return True
        if self._literal(host) is not None:
            return self.any_public  # an address literal: only `*` or its own entry lets it through
        return self.any_public or any(host.endswith(suffix) for suffix in self.suffixes)

    def address_allowed(self, address: IpAddress) -> bool:
        return address.is_global or any(address in network for network in self.networks)


def parse_allowed_hosts(raw: str | None) -> AllowedHosts:
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[IpNetwork] = []
    any_public = False
    for entry in (part.strip().lower() for part in (raw or "").split(",")):
        if not entry:
            continue
        if entry == "*":
            any_public = True
        elif entry.startswith("*.") and HOST_NAME.fullmatch(entry[2:]):
            suffixes.append(entry[1:])
        elif HOST_NAME.fullmatch(entry) and not entry.replace(".", "").isdigit():
            names.add(entry)
        else:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=True))
            except ValueError:
                raise HostListError(
                    f"{entry[:40]!r} is not a host name, *.suffix, IP address or network"
                ) from None
    return AllowedHosts(frozenset(names), tuple(suffixes), tuple(networks), any_public)


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lowercased, without brackets
    port: int


def check_url(url: str, allowed: AllowedHosts) -> tuple[Target | None, str | None]:
    """(the target, None), or (None, why the URL is refused) before any name is resolved."""
    if not url:
        return None, "is required"
    if len(url) > MAX_URL_CHARS:
        return None, f"is {len(url)} characters long; the limit is {MAX_URL_CHARS}"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return None, "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, "is not a URL"
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        return None, "must be an https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return None, "must not carry credentials (user:password@); the signature authenticates us"
    if parts.fragment:
        return None, "must not have a #fragment"
    if not allowed.enabled:
        return (
            None,
            "cannot be registered: outbound webhooks are off (BILLING_WEBHOOK_ALLOWED_HOSTS is unset)",
        )
    if not allowed.host_matches(host):
        return None, f"has host {host[:64]!r}, which BILLING_WEBHOOK_ALLOWED_HOSTS does not allow"
    if parts.scheme == "http" and not allowed.listed_exactly(host):
        return (
            None,
            "must be https (plain http only to a host listed exactly in BILLING_WEBHOOK_ALLOWED_HOSTS)",
        )
    return Target(url, parts.scheme, host, port or (443 if parts.scheme == "https" else 80)), None


def refused_addresses(addresses: Iterable[str], allowed: AllowedHosts) -> list[str]:
    """The resolved addresses the allow-list refuses (a host is refused if any of its addresses is)."""
    refused = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            refused.append(text)
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not allowed.address_allowed(address):
            refused.append(text)
    return refused
