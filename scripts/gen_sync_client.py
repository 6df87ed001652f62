"""Generate the blocking client (`_sync.py`) from the async one (`_async.py`), or check that it is current.

    python3 dev.py gen                                # also regenerates the stubs
    python3 dev.py run python scripts/gen_sync_client.py [--check]

unasync rewrites the tokens: `async`/`await` go, and the names below become their blocking twins. It
rewrites single names only, so the `grpc.aio.X` paths are first shortened to `grpc.X` (on tokens too, so
strings and comments stay as written). ruff formats the result, since shorter lines may now be joined;
unasync and ruff are pinned in constraints.txt, so the output is reproducible byte for byte.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

import tokenize_rt
import unasync

ROOT = Path(__file__).resolve().parent.parent
CLIENT_DIR = ROOT / "clients" / "consofta" / "billing" / "client"
SOURCE = CLIENT_DIR / "_async.py"
TARGET = CLIENT_DIR / "_sync.py"
COMMAND = "python3 dev.py gen"
HEADER = (
    f"# Generated from _async.py by `{COMMAND}` (scripts/gen_sync_client.py); do not edit by hand.\n"
    "# Change _async.py and regenerate: tests/client/test_sync_client_generated.py fails on any drift.\n"
)

# Async name -> blocking name, for whole name tokens (unasync's own rules add __aenter__ -> __enter__, ...).
REPLACEMENTS = {
    "AsyncBillingClient": "BillingClient",
    "AioRpcError": "RpcError",
    "asyncio": "time",  # the module is only used for asyncio.sleep -> time.sleep
    "UsageServiceAsyncStub": "UsageServiceStub",
    "WalletServiceAsyncStub": "WalletServiceStub",
    "SettingsServiceAsyncStub": "SettingsServiceStub",
}


def _without_grpc_aio(source: str) -> str:
    """`grpc.aio.X` -> `grpc.X`: the blocking channel, calls and errors sit at the top of the grpc module."""
    tokens = tokenize_rt.src_to_tokens(source)
    kept: list[tokenize_rt.Token] = []
    i = 0
    while i < len(tokens):
        window = [t.src for t in tokens[i : i + 4]]
        if window == ["grpc", ".", "aio", "."]:
            kept.extend(tokens[i : i + 2])
            i += 4
            continue
        kept.append(tokens[i])
        i += 1
    return str(tokenize_rt.tokens_to_src(kept))


def _ruff_format(source: str) -> str:
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run(
        [str(ruff), "format", "--stdin-filename", str(TARGET.relative_to(ROOT)), "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"gen_sync_client: ruff format failed on the generated code:\n{result.stderr}")
    return result.stdout


def generate() -> str:
    """The source of `_sync.py` as `_async.py` generates it now."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "_async.py"
        source.write_text(_without_grpc_aio(SOURCE.read_text(encoding="utf-8")), encoding="utf-8")
        rule = unasync.Rule("_async.py", "_sync.py", additional_replacements=REPLACEMENTS)
        unasync.unasync_files([str(source)], rules=[rule])
        rewritten = (Path(tmp) / "_sync.py").read_text(encoding="utf-8")
    return _ruff_format(HEADER + rewritten)


def main(argv: list[str]) -> int:
    fresh = generate()
    committed = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    name = TARGET.relative_to(ROOT)
    if "--check" in argv:
        if fresh != committed:
            diff = difflib.unified_diff(
                committed.splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                f"{name} (committed)",
                f"{name} (generated from _async.py)",
            )
            print(f"gen_sync_client: {name} differs from _async.py; run `{COMMAND}`:", file=sys.stderr)
            sys.stderr.writelines(diff)
            return 1
        print(f"gen_sync_client: {name} matches _async.py")
        return 0
    TARGET.write_text(fresh, encoding="utf-8")
    print(f"gen_sync_client: wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
