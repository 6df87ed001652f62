"""The gRPC server's connection limits, from the configuration (all explicit, none left to defaults)."""

from __future__ import annotations

from service.config import Config


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def server_options(config: Config) -> list[tuple[str, int]]:
    return [
        # Streams one HTTP/2 connection may have open at once; more wait at the client.
        ("grpc.max_concurrent_streams", config.grpc_max_concurrent_streams),
        # Ping idle clients, and drop a connection whose ping goes unanswered: dead peers free their streams.
        ("grpc.keepalive_time_ms", _ms(config.grpc_keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", _ms(config.grpc_keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        # A client pinging more often than this without data is told to go away (after 2 strikes).
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(config.grpc_min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", _ms(config.grpc_max_connection_idle_s)),
        # Connections are recycled, so load spreads over new replicas; the grace lets calls finish (event
        # streams then end with UNAVAILABLE and resume from their cursor elsewhere).
        ("grpc.max_connection_age_ms", _ms(config.grpc_max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", _ms(config.grpc_max_connection_age_grace_s)),
        ("grpc.max_receive_message_length", config.grpc_max_receive_message_bytes),
    ]
