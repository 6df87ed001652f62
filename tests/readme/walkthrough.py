"""The README's walk-through as data: every fenced `sh` block, in order, split into its commands.

A block runs as written. An HTML comment on the line before its fence says otherwise:
  <!-- readme-test: skip (why) -->    the block is not run here (Docker, a server of your own, the suite)
  <!-- readme-test: needs TOOL -->    the block runs only where TOOL is on PATH (promtool, say)
Inside a block, a comment line `# expect: CODE` says that the next command fails on purpose with that
gRPC status code (grpcurl's name for it, e.g. InvalidArgument), and `# expect: exit N` that it exits
with N. A block runs in one shell, as a reader would paste it, so a variable set by one command is seen
by the next. A block that is just `python3 dev.py serve` is the server the other blocks talk to.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

_FENCE = re.compile(r"```(\S*)\n(.*?)```", re.DOTALL)
_DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(skip|needs)\b\s*(.*?)\s*-->")
_EXPECT = re.compile(r"#\s*expect:\s*(?:exit\s+(\d+)|([A-Za-z]+))\s*")
SERVE = "python3 dev.py serve"


@dataclass(frozen=True)
class Command:
    text: str
    line: int  # where it starts in the README, 1-based
    expect_code: str | None = None  # a gRPC code name when the command fails on purpose
    expect_exit: int | None = None  # the exit code of a command that fails on purpose, when not gRPC


@dataclass
class Block:
    line: int
    commands: list[Command] = field(default_factory=list)
    skip: str | None = None  # why the block is not run here
    needs: str | None = None  # a tool that must be on PATH for it to run

    @property
    def is_serve(self) -> bool:
        return [c.text for c in self.commands] == [SERVE]


def _complete(text: str) -> bool:
    """Whether `text` is one whole shell command, by bash's own parser (`bash -n`): no open quote,
    `$(`, pipe or line continuation."""
    if text.rstrip().endswith("\\"):
        return False
    return subprocess.run(["bash", "-n", "-c", text], capture_output=True).returncode == 0


def _commands(body: str, first_line: int) -> list[Command]:
    commands: list[Command] = []
    pending: list[str] = []
    start = first_line
    expect: tuple[str | None, int | None] = (None, None)
    for offset, line in enumerate(body.splitlines()):
        if not pending:
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                marked = _EXPECT.fullmatch(stripped)
                if marked:
                    exit_code, grpc_code = marked.groups()
                    expect = (grpc_code, None if exit_code is None else int(exit_code))
                continue
            start = first_line + offset
        pending.append(line)
        text = "\n".join(pending)
        if _complete(text):
            commands.append(Command(text, start, *expect))
            pending, expect = [], (None, None)
    if pending:
        raise ValueError(f"README line {start}: a command is not finished at the end of its block")
    return commands


def blocks(readme: str) -> list[Block]:
    """Every `sh` block of the README, in order."""
    found = []
    for match in _FENCE.finditer(readme):
        if match.group(1) != "sh":
            continue
        fence_line = readme.count("\n", 0, match.start()) + 1
        block = Block(fence_line, _commands(match.group(2), fence_line + 1))
        before = readme[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directive = _DIRECTIVE.fullmatch(before.strip())
        if directive:
            kind, value = directive.groups()
            if kind == "skip":
                block.skip = value.strip("()") or "marked skip"
            else:
                block.needs = value
        found.append(block)
    return found
