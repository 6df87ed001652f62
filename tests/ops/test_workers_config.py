"""`serve --workers N` settings: the worker count, the per-worker metrics ports, the connection budget."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import pytest

from service.cli import main
from service.config import ConfigError, load_config, usable_cores
from service.db.budget import check_connection_budget, connections_per_process, usable_connections
from service.supervisor import metrics_ports, reserve_port


def test_one_worker_unless_asked() -> None:
    assert load_config({}).grpc_workers == 1
    assert load_config({"BILLING_GRPC_WORKERS": "4"}).grpc_workers == 4
    assert load_config({"BILLING_GRPC_WORKERS": "auto"}).grpc_workers == min(usable_cores(), 64)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "BILLING_GRPC_WORKERS=0 is out of range (1-64, or 'auto')"),
        ("65", "BILLING_GRPC_WORKERS=65 is out of range (1-64, or 'auto')"),
        ("two", "BILLING_GRPC_WORKERS='two' is not a whole number or 'auto'"),
        ("4\n", None),  # surrounding blanks are trimmed like every variable's
    ],
)
def test_a_bad_worker_count_is_refused_by_name(value: str, message: str | None) -> None:
    if message is None:
        assert load_config({"BILLING_GRPC_WORKERS": value}).grpc_workers == 4
        return
    with pytest.raises(ConfigError) as caught:
        load_config({"BILLING_GRPC_WORKERS": value})
    assert str(caught.value) == message


def test_the_workers_option_is_checked_like_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--workers", "0"])
    assert caught.value.code == 2
    assert "--workers=0 is out of range (1-64, or 'auto')" in capsys.readouterr().err


def test_each_worker_gets_the_next_metrics_port_and_none_collides() -> None:
    config = load_config({"BILLING_METRICS_PORT": "9464", "BILLING_GRPC_PORT": "50051"})
    assert metrics_ports(config, 3) == [9464, 9465, 9466]
    assert metrics_ports(replace(config, metrics_port=0), 3) == [0, 0, 0]
    assert metrics_ports(replace(config, metrics_port=None), 2) == [None, None]
    with pytest.raises(ConfigError) as caught:
        metrics_ports(replace(config, webhook_port=9465), 3)
    assert "BILLING_WEBHOOK_PORT=9465 is inside the workers' metrics ports" in str(caught.value)
    with pytest.raises(ConfigError):
        metrics_ports(replace(config, metrics_port=65535), 2)


def test_a_reserved_port_is_shared_with_reuseport_and_refused_to_others() -> None:
    import socket

    held = reserve_port("127.0.0.1", 0)
    port = held.getsockname()[1]
    try:
        again = reserve_port("127.0.0.1", port)  # a worker's bind: SO_REUSEPORT on both
        again.close()
        plain = socket.socket()
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        try:
            with pytest.raises(ConfigError) as caught:
                reserve_port("127.0.0.1", plain.getsockname()[1])
            assert f"cannot bind 127.0.0.1:{plain.getsockname()[1]}" in str(caught.value)
        finally:
            plain.close()
    finally:
        held.close()


async def test_the_budget_counts_every_process_and_its_own_connections(db_url: str) -> None:
    config = replace(load_config({}), db_pool_max_size=10)
    assert connections_per_process(config) == 13
    assert connections_per_process(replace(config, metrics_port=None)) == 12
    conn = await asyncpg.connect(db_url)
    try:
        _max, usable = await usable_connections(conn)
    finally:
        await conn.close()
    fits = (usable - 1) // 13
    assert await check_connection_budget(db_url, config, processes=fits) == fits * 13
    with pytest.raises(ConfigError) as caught:
        await check_connection_budget(db_url, config, processes=fits + 1)
    assert f"{fits + 1} server process(es) (BILLING_GRPC_WORKERS) x 13 connections" in str(caught.value)
