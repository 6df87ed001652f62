"""Checks made before a process starts anything: a port that is taken fails here, naming its setting,
before the embedded Postgres is started or a migration runs."""

from __future__ import annotations

import socket

from service.config import Config, StartupError


def listeners(config: Config) -> list[tuple[str, str, int]]:
    """(setting, host, port) of every fixed port `serve` will listen on (0 picks a free one: no check)."""
    wanted = [("BILLING_GRPC_PORT", config.grpc_host, config.grpc_port)]
    if config.metrics_port is not None:
        wanted.append(("BILLING_METRICS_PORT", config.metrics_host, config.metrics_port))
    if config.stripe_webhook_secret:
        wanted.append(("BILLING_WEBHOOK_PORT", config.webhook_host, config.webhook_port))
    return [(name, host, port) for name, host, port in wanted if port]


def port_taken(host: str, port: int) -> OSError | None:
    """The error binding host:port gives now, or None if it is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a port in TIME_WAIT is free; only a live listener (or another bind) is a clash.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            return error
    return None


def in_use_error(setting: str, host: str, port: int, error: OSError | str) -> StartupError:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return StartupError(
        f"{setting}: cannot listen on {host}:{port} ({reason}); another process is using it: stop it, "
        f"or set {setting} to a free port (0 picks one)"
    )


def check_ports(config: Config) -> None:
    """StartupError naming the first setting whose port cannot be bound."""
    for setting, host, port in listeners(config):
        error = port_taken(host, port)
        if error is not None:
            raise in_use_error(setting, host, port, error)
