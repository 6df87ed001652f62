"""The gRPC port: plaintext, TLS or mTLS, with certificates that rotate on disk without a restart.

gRPC asks `CertificateFiles.fetch` for the certificate configuration at every new TLS handshake; it
answers None (keep the current one) unless a file changed (its size, mtime or inode), or SIGHUP asked for a
reload. A pair that does not load (e.g. the certificate is written but not yet its key) is not taken:
the current one is kept and the next handshake looks again. Connections already open keep the
certificate they were made with.
"""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path

import grpc
import structlog

from service.config import Config, ConfigError, SecurityConfig, exposure_problem, is_loopback

log = structlog.get_logger(__name__)

AUTH_OFF_WARNING = (
    "authentication is OFF: every caller may call every RPC, and each call's line says auth=off"
)

Stamp = tuple[tuple[int, int, int], ...]


class CertificateFiles:
    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._lock = threading.Lock()
        self._forced = False
        self._stamp: Stamp = ()
        self.loads = 0
        initial = self._load()
        if initial is None:
            raise ValueError("the TLS certificate and key do not load")
        self._initial = initial

    def _paths(self) -> list[Path]:
        return [p for p in (self.cert_file, self.key_file, self.client_ca_file) if p is not None]

    def _current_stamp(self) -> Stamp:
        stamps = []
        for path in self._paths():
            st = os.stat(path)
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def _load(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = self._current_stamp()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file is not None:
                context.load_verify_locations(cafile=self.client_ca_file)
            cert, key = self.cert_file.read_bytes(), self.key_file.read_bytes()
            client_ca = None if self.client_ca_file is None else self.client_ca_file.read_bytes()
            if self._current_stamp() != stamp:
                return None  # written to while we read: the next handshake reads it whole
        except (OSError, ssl.SSLError) as error:
            log.warning("TLS files do not load; keeping the current certificate", error=str(error)[:200])
            return None
        self._stamp = stamp
        self.loads += 1
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def reload(self) -> None:
        """Read the files again at the next handshake even if they look unchanged (SIGHUP)."""
        with self._lock:
            self._forced = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                changed = self._forced or self._current_stamp() != self._stamp
            except OSError:
                return None  # a file is being replaced: keep the current certificate
            if not changed:
                return None
            configuration = self._load()
            if configuration is not None:
                self._forced = False
                log.info("TLS certificate reloaded", cert_file=str(self.cert_file))
            return configuration

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            # gRPC takes None as "no change"; its stubs say a configuration is always returned.
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.client_ca_file is not None,
        )


def bind(server: grpc.aio.Server, config: Config) -> tuple[int, CertificateFiles | None]:
    """Add the gRPC port the configuration asks for: (port, the certificates when TLS is on)."""
    security = config.security
    address = f"{config.grpc_host}:{config.grpc_port}"
    if security.tls_cert_file is None or security.tls_key_file is None:
        return server.add_insecure_port(address), None
    files = CertificateFiles(security.tls_cert_file, security.tls_key_file, security.tls_client_ca_file)
    return server.add_secure_port(address, files.credentials()), files


def check_exposure(config: Config) -> None:
    """Refuse to serve open by accident (also for a Config built by hand), and say loudly what is open."""
    security: SecurityConfig = config.security
    problem = exposure_problem(config.grpc_host, security)
    if problem is not None:
        raise ConfigError(problem)
    if not security.auth_required:
        log.warning(
            AUTH_OFF_WARNING,
            host=config.grpc_host,
            reason="BILLING_AUTH=off"
            if security.auth_explicit
            else "BILLING_AUTH unset on a loopback address",
        )
    elif not security.tls and not is_loopback(config.grpc_host):
        log.warning(
            "serving without TLS on a non-loopback address: API keys cross the network in clear unless "
            "something in between encrypts it (set BILLING_TLS_CERT_FILE and BILLING_TLS_KEY_FILE)",
            host=config.grpc_host,
        )
