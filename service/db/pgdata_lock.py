"""One process at a time owns an embedded Postgres data folder.

`serve` and `worker` start (or adopt) the embedded Postgres of BILLING_PGDATA and stop it when they
exit. A second one on the same folder would adopt the first one's server and, on its way out, stop it
under the first. So the owner holds an exclusive `flock` on a file beside the folder
(`.<folder>.lock`) for as long as it runs; the kernel drops it when the process dies, even by SIGKILL,
so a crash never leaves the folder locked (the orphaned postmaster is then adopted by the next owner).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from service.config import StartupError


class PgdataInUse(StartupError):
    pass


def lock_path(pgdata: Path) -> Path:
    return pgdata.parent / f".{pgdata.name}.lock"


class PgdataLock:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self.path = lock_path(self.pgdata)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise PgdataInUse naming the owner's pid. Nothing else is touched."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise PgdataInUse(
                f"BILLING_PGDATA {self.pgdata} is in use by another "
                f"consofta-billing process (pid {owner}); stop it, or give this one its own BILLING_PGDATA "
                "or a DATABASE_URL"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def held_elsewhere(self) -> bool:
        """True if another process holds the lock now (checked without keeping it)."""
        try:
            self.acquire()
        except PgdataInUse:
            return True
        self.release()
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
