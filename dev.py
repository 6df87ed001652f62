#!/usr/bin/env python3
"""The two commands a newcomer needs: `python3 dev.py serve` and `python3 dev.py test`.

Only Python >= 3.11 and access to PyPI are assumed. The first run makes `.venv/` and installs the
pinned dependencies (constraints.txt) into it; later runs reinstall only when pyproject.toml,
clients/pyproject.toml or constraints.txt changed. Everything after the sub-command is passed on:
  python3 dev.py serve                 -> consofta-billing serve
  python3 dev.py test [pytest args]    -> pytest
  python3 dev.py gen                   -> regenerate the stubs in clients/ from protos/, and the
                                          blocking client from the async one (--check: only compare)
  python3 dev.py run CMD [ARGS]        -> any command inside the virtual environment
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"
INPUTS = ("pyproject.toml", "clients/pyproject.toml", "constraints.txt")


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in INPUTS:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"dev.py: Python >= 3.11 is required, this is {sys.version.split()[0]}")
    wanted = _inputs_digest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv/", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print(
        "dev.py: installing pinned dependencies into .venv/ (first run takes about a minute)",
        file=sys.stderr,
        flush=True,
    )
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "pip",
            "install",
            # Not --quiet: the first install takes a minute, and pip's own lines show it progressing.
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            "-e",
            str(ROOT / "clients"),
            "-e",
            f"{ROOT}[dev]",
        ],
        check=True,
    )
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    ensure_venv()
    if command == "serve":
        args = [str(BIN / "consofta-billing"), "serve", *rest]
    elif command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "gen":
        # The stubs, then the blocking client from the async one; `--check` goes to both.
        stubs = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "gen_stubs.py"), *rest], cwd=ROOT)
        if stubs.returncode != 0:
            return stubs.returncode
        args = [str(BIN / "python"), str(ROOT / "scripts" / "gen_sync_client.py"), *rest]
    elif command == "run":
        if not rest:
            sys.exit("dev.py run: give a command to run inside .venv")
        exe = BIN / rest[0]
        args = [str(exe) if exe.exists() else rest[0], *rest[1:]]
    else:
        sys.exit(f"dev.py: unknown command {command!r}; try serve, test, gen or run")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(VENV))
    os.chdir(ROOT)
    # exec so that SIGTERM / Ctrl-C reach the service itself, which stops its embedded Postgres.
    os.execve(args[0], args, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
