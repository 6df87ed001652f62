"""The configuration every in-process test server uses: loopback and port 0 for every listener, so a
service running on the default ports (or another worktree's tests) never clashes with the suite."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from service.config import Config, load_config


def server_config(env: dict[str, str] | None = None, **overrides: Any) -> Config:
    config = replace(
        load_config(env or {}), grpc_host="127.0.0.1", grpc_port=0, metrics_port=0, webhook_port=0
    )
    return replace(config, **overrides)
