#!/usr/bin/env python3
"""The commands a newcomer needs: `python3 dev.py serve`, `python3 dev.py test` and `python3 dev.py check`.

Only Python >= 3.11 and access to PyPI are assumed. The first run makes `.venv/` and installs into it
what the command needs, at the versions pinned in constraints.txt: `serve` only the service's runtime,
`grpcurl`/`buf` the pinned tools too, `test`/`check`/`gen` the test and lint tools as well. The installer
is uv (pinned in constraints.txt, bootstrapped into .venv/) when it can be had, pip otherwise
(DEV_PY_INSTALLER=pip forces pip). Later runs reinstall only when pyproject.toml, clients/pyproject.toml
or constraints.txt changed. Everything after the sub-command is passed on:
  python3 dev.py serve                 -> consofta-billing serve
  python3 dev.py test [pytest args]    -> pytest
  python3 dev.py check                 -> every linter and type check CI runs, stopping at the first failure
  python3 dev.py gen                   -> regenerate the stubs in clients/ from protos/, and the
                                          blocking client from the async one (--check: only compare)
  python3 dev.py grpcurl ARGS          -> the pinned grpcurl
  python3 dev.py buf ARGS              -> the pinned buf CLI
  python3 dev.py audit                 -> pip-audit over constraints.txt (skipped, saying so, when the
                                          vulnerability database cannot be reached)
  python3 dev.py run CMD [ARGS]        -> any command inside the virtual environment
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"
INPUTS = ("pyproject.toml", "clients/pyproject.toml", "constraints.txt")
CONSTRAINTS = ROOT / "constraints.txt"

# What each level installs (extras of the root project); each level includes the ones before it.
RUNTIME, TOOLS, DEV = "runtime", "tools", "dev"
LEVELS = (RUNTIME, TOOLS, DEV)
EXTRAS = {RUNTIME: "", TOOLS: "[tools]", DEV: "[dev]"}
DESCRIBED = {
    RUNTIME: "the service's runtime dependencies",
    TOOLS: "the runtime dependencies and the pinned tools (grpcurl, buf)",
    DEV: "the runtime, test and lint dependencies",
}

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


def _installed_level(wanted_digest: str) -> tuple[int, int]:
    """(level for these inputs, level installed before) as indexes in LEVELS; -1 for none."""
    try:
        stamp = json.loads(STAMP.read_text())
        before = LEVELS.index(stamp["level"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1, -1
    return (before if stamp.get("digest") == wanted_digest else -1), before


def _pinned(name: str) -> str:
    """`name==version` from constraints.txt."""
    for line in CONSTRAINTS.read_text().splitlines():
        if re.fullmatch(rf"{re.escape(name)}==\S+", line.strip(), flags=re.IGNORECASE):
            return line.strip()
    sys.exit(f"dev.py: {name} is not pinned in constraints.txt")


class _Step:
    """One line of progress: `dev.py: <what> ...` then `ok (N.Ns)`; on failure the command's output."""

    def __init__(self, what: str) -> None:
        self.what = what

    def run(self, command: list[str], *, quiet: bool = False) -> bool:
        """Run `command`; True when it succeeded. `quiet`: a failure is expected, show no output."""
        print(f"dev.py: {self.what} ...", end="", file=sys.stderr, flush=True)
        started = time.monotonic()
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        took_s = time.monotonic() - started
        if result.returncode == 0:
            print(f" ok ({took_s:.1f}s)", file=sys.stderr, flush=True)
            return True
        print(f" failed ({took_s:.1f}s)", file=sys.stderr, flush=True)
        if not quiet:
            print(f"$ {' '.join(command)}\n{result.stdout}", end="", file=sys.stderr, flush=True)
        return False


def _uv() -> str | None:
    """The pinned uv inside .venv/, installed there on first use; None when it cannot be had."""
    if os.environ.get("DEV_PY_INSTALLER", "") == "pip":
        return None
    uv = BIN / "uv"
    pin = _pinned("uv")
    if uv.exists():
        version = subprocess.run([str(uv), "--version"], stdout=subprocess.PIPE, text=True).stdout.split()
        if len(version) >= 2 and pin == f"uv=={version[1]}":
            return str(uv)
    # With the pip of the python3 running dev.py (`--python`, pip >= 22.3), so that .venv/ needs no pip of
    # its own, which takes seconds to put in. A python3 without pip, or a platform without a uv wheel, is
    # not a failure: pip inside .venv/ does the work then.
    pip = [sys.executable, "-m", "pip", "--python", str(BIN / "python"), "install", "--quiet"]
    if _Step(f"installing the installer ({pin})").run([*pip, "--disable-pip-version-check", pin], quiet=True):
        return str(uv)
    print("dev.py: going on with pip", file=sys.stderr, flush=True)
    return None


def _pip() -> list[str]:
    """pip inside .venv/, added on first use (.venv/ is made without it)."""
    python = str(BIN / "python")
    has_pip = subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if not has_pip and not _Step("adding pip to .venv/").run([python, "-m", "ensurepip", "--default-pip"]):
        sys.exit(1)
    return [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]


def ensure_venv(level: str = DEV) -> None:
    """Make .venv/ hold at least `level` (RUNTIME, TOOLS or DEV) for the current pinned inputs."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"dev.py: Python >= 3.11 is required, this is {sys.version.split()[0]}")
    wanted = _inputs_digest()
    have, before = _installed_level(wanted)
    need = LEVELS.index(level)
    if have >= need:
        return
    # What was installed before is kept up to date too (a changed pin reaches the test tools as well).
    level = LEVELS[max(before, need)]
    if not (BIN / "python").exists():
        venv = [sys.executable, "-m", "venv", "--without-pip", str(VENV)]
        if not _Step("creating .venv/").run(venv):
            sys.exit(1)
    uv = _uv()
    targets = ["-c", str(CONSTRAINTS), "-e", str(ROOT / "clients"), "-e", f"{ROOT}{EXTRAS[level]}"]
    if uv is not None:
        install = [uv, "pip", "install", "--quiet", "--python", str(BIN / "python"), *targets]
        how = "uv"
    else:
        install = [*_pip(), *targets]
        how = "pip, about a minute"
    if not _Step(f"installing {DESCRIBED[level]} ({how})").run(install):
        sys.exit(1)
    STAMP.write_text(json.dumps({"digest": wanted, "level": level}))


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


# What pip-audit's failure looks like when it is the network, not the audit, that failed.
_OFFLINE = re.compile(
    r"ConnectionError|Max retries exceeded|NameResolution|Temporary failure in name resolution|"
    r"Connection refused|timed out|Network is unreachable|failed to fetch|error sending request",
    re.IGNORECASE,
)


def audit() -> int:
    """pip-audit over the pinned constraints; a line saying it was skipped when it cannot be done here.

    Only a vulnerability found fails. An index or vulnerability service that cannot be reached, or
    that knows none of the packages (a mirror without the vulnerability data), skips with one line:
    an audit that audited nothing must not read as a pass.
    """
    uv = _uv()
    if uv is None:
        print("skip pip-audit: uv is not available here to run it", flush=True)
        return 0
    report = VENV / "pip-audit.json"
    report.unlink(missing_ok=True)
    command = [uv, "tool", "run", "--quiet", "--from", _pinned("pip-audit"), "pip-audit"]
    command += ["-r", str(CONSTRAINTS), "--no-deps", "--disable-pip", "--progress-spinner", "off"]
    command += ["--format", "json", "--output", str(report)]
    started = time.monotonic()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took_s = time.monotonic() - started
    if not report.exists():
        if _OFFLINE.search(result.stdout):
            print(f"skip pip-audit ({took_s:.1f}s): the vulnerability database cannot be reached", flush=True)
            return 0
        print(f"FAIL pip-audit ({took_s:.1f}s): {' '.join(command)}\n{result.stdout}", end="", flush=True)
        return result.returncode or 1
    dependencies = json.loads(report.read_text())["dependencies"]
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        print(
            f"skip pip-audit ({took_s:.1f}s): the vulnerability database knows none of the "
            f"{len(dependencies)} pinned packages (no access to its data from here)",
            flush=True,
        )
        return 0
    vulnerable = [d for d in audited if d.get("vulns")]
    for d in vulnerable:
        ids = ", ".join(
            f"{v['id']} (fixed in {', '.join(v.get('fix_versions') or ['?'])})" for v in d["vulns"]
        )
        print(f"  {d['name']}=={d['version']}: {ids}", flush=True)
    if vulnerable:
        print(
            f"FAIL pip-audit ({took_s:.1f}s): {len(vulnerable)} pinned package(s) have known vulnerabilities"
        )
        return 1
    unaudited = len(dependencies) - len(audited)
    note = f"; {unaudited} not known to the database" if unaudited else ""
    print(
        f"ok   pip-audit ({took_s:.1f}s): {len(audited)} packages, no known vulnerabilities{note}", flush=True
    )
    return 0


# The level each command needs; `run` needs the runtime, or everything when its command is not there yet.
NEEDS = {
    "serve": RUNTIME,
    "audit": RUNTIME,
    "grpcurl": TOOLS,
    "buf": TOOLS,
    "test": DEV,
    "check": DEV,
    "gen": DEV,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in NEEDS and command != "run":
        sys.exit(
            f"dev.py: unknown command {command!r}; try serve, test, check, gen, grpcurl, buf, audit or run"
        )
    ensure_venv(NEEDS.get(command, RUNTIME))
    if command in {"check", "audit"}:
        if rest:
            sys.exit(f"dev.py {command}: takes no arguments")
        return check() if command == "check" else audit()
    if command == "serve":
        args = [str(BIN / "consofta-billing"), "serve", *rest]
    elif command in {"grpcurl", "buf"}:
        args = [str(BIN / command), *rest]
    elif command == "test":
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "gen":
        # The stubs, then the blocking client from the async one; `--check` goes to both.
        stubs = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "gen_stubs.py"), *rest], cwd=ROOT)
        if stubs.returncode != 0:
            return stubs.returncode
        args = [str(BIN / "python"), str(ROOT / "scripts" / "gen_sync_client.py"), *rest]
    else:
        if not rest:
            sys.exit("dev.py run: give a command to run inside .venv")
        exe = BIN / rest[0]
        if not exe.exists() and "/" not in rest[0]:
            ensure_venv(DEV)  # a test or lint tool (mypy, ruff...) comes with the dev extra
        args = [str(exe) if exe.exists() else rest[0], *rest[1:]]
    env = _venv_env()
    os.chdir(ROOT)
    # exec so that SIGTERM / Ctrl-C reach the service itself, which stops its embedded Postgres.
    os.execvpe(args[0], args, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
