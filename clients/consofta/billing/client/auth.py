"""Transport security and caller identity: TLS (optionally mutual) and a bearer token.

The token travels as `authorization: Bearer <token>` metadata on every call the client makes. It is
sent as plain metadata rather than as gRPC call credentials because call credentials are refused on a
plaintext channel, and in-cluster callers may reach the service without TLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

AUTHORIZATION_KEY = "authorization"


class InsecureTokenError(ValueError):
    """A bearer token was given for a plaintext channel without allow_insecure_token=True."""


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the channel. All fields are PEM bytes.

    root_ca_pem: the CA that signed the server's certificate; None uses the system's roots.
    client_cert_pem + client_key_pem: this service's certificate and key, for mutual TLS; both or none.
    server_name: the name to check the server's certificate against when it differs from the target
    host (e.g. when calling through an IP address).
    """

    root_ca_pem: bytes | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert_pem is None) != (self.client_key_pem is None):
            raise ValueError("mutual TLS needs both client_cert_pem and client_key_pem")

    @classmethod
    def from_files(
        cls,
        *,
        root_ca: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        server_name: str | None = None,
    ) -> TlsConfig:
        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(read(root_ca), read(client_cert), read(client_key), server_name)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_ca_pem,
            private_key=self.client_key_pem,
            certificate_chain=self.client_cert_pem,
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    if token is None:
        return ()
    if not token or any(c in token for c in "\r\n"):
        raise ValueError("bearer_token must be a non-empty single-line string")
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)
