#!/usr/bin/env python3
"""The commands a newcomer needs: `python3 dev.py serve`, `python3 dev.py test` and `python3 dev.py check`.

Only Python >= 3.11 and access to PyPI are assumed. The first run makes `.venv/` and installs the
pinned dependencies (constraints.txt) into it; later runs reinstall only when pyproject.toml,
clients/pyproject.toml or constraints.txt changed. Everything after the sub-command is passed on:
  python3 dev.py serve                 -> consofta-billing serve
  python3 dev.py test [pytest args]    -> pytest
  python3 dev.py check                 -> every linter and type check CI runs, stopping at the first failure
  python3 dev.py gen                   -> regenerate the stubs in clients/ from protos/, and the
                                          blocking client from the async one (--check: only compare)
  python3 dev.py run CMD [ARGS]        -> any command inside the virtual environment
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"
INPUTS = ("pyproject.toml", "clients/pyproject.toml", "constraints.txt")

LINTED = ("service", "tests", "scripts", "bench", "clients", "dev.py")
# (name, command) in the order they run; the cheap ones first, so a typo fails in a second.
CHECKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ruff check", ("ruff", "check", *LINTED)),
    ("ruff format --check", ("ruff", "format", "--check", *LINTED)),
    ("mypy --strict service/", ("mypy", "service")),
    (
        "mypy --strict client",
        (
            "mypy",
            "--config-file",
            "clients/pyproject.toml",
            "clients/consofta/billing/client",
            "clients/examples",
            "clients/tests",
        ),
    ),
    # Looser than service/ (pyproject.toml's override for tests.* and bench.*): bodies are checked,
    # annotations are not required.
    ("mypy tests/ bench/", ("mypy", "tests", "bench")),
    ("hadolint Dockerfile", ("hadolint", "Dockerfile")),
    ("buf lint", ("buf", "lint")),
    # Against the main branch's protos: a change v1's callers would notice fails here, before review.
    ("buf breaking (against main)", ("buf", "breaking", "--against", ".git#branch=main")),
)


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


def _venv_env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(VENV))


def check() -> int:
    """Run CHECKS in order, one line each; on the first failure show its output and stop."""
    env = _venv_env()
    for name, command in CHECKS:
        started = time.monotonic()
        result = subprocess.run(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        took_s = time.monotonic() - started
        if result.returncode != 0:
            print(f"FAIL {name} ({took_s:.1f}s): {' '.join(command)}", flush=True)
            print(result.stdout, end="", flush=True)
            return result.returncode
        print(f"ok   {name} ({took_s:.1f}s)", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    ensure_venv()
    if command == "check":
        if rest:
            sys.exit("dev.py check: takes no arguments")
        return check()
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
        sys.exit(f"dev.py: unknown command {command!r}; try serve, test, check, gen or run")
    env = _venv_env()
    os.chdir(ROOT)
    # exec so that SIGTERM / Ctrl-C reach the service itself, which stops its embedded Postgres.
    os.execve(args[0], args, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
