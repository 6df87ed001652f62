"""A py-spy profile of a server process while one bench phase runs, and its top entries.

    python3 dev.py run python bench/record_usage.py --quick --profile DIR    # DIR/<phase>.txt per phase
    python3 dev.py run python bench/server_profile.py DIR/unary_hot.txt      # its top entries

py-spy is not a dependency of the project: install it into the venv first
(`.venv/bin/uv pip install --python .venv/bin/python py-spy`). Each file is py-spy's raw format, one
collapsed stack per line with its sample count, which flame-graph tools read too. The top entries are
by share of the samples: "total" counts a function wherever it is on the stack, "own" only where it is
the innermost frame. Sampling costs the server some CPU, so a profiled run's rates are not for
comparison with an unprofiled one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

SAMPLES_PER_S = 250


def py_spy() -> str:
    """The py-spy executable next to this interpreter or on PATH; SystemExit saying how to get it."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/uv pip install --python .venv/bin/python py-spy")
    return found


@contextlib.contextmanager
def profiled(pid: int, output: Path) -> Iterator[None]:
    """Sample `pid` (all its threads, native frames left out) into `output` while the block runs."""
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(SAMPLES_PER_S),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        # py-spy writes its file when interrupted.
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if not output.exists():
            print(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}", file=sys.stderr)


def _frames(stack: str) -> list[str]:
    # A frame is "function (file:line)"; the line is dropped so that a function counts once.
    out = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        path = where.rsplit(":", 1)[0]
        short = "/".join(path.split(os.sep)[-2:])
        out.append(f"{name} ({short})")
    return out


def top(path: Path, entries: int = 25) -> str:
    """The profile's top entries by total and by own samples, as text."""
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if samples == 0:
        return f"{path}: no samples"
    lines = [f"{path.name}: {samples} samples"]
    for title, counter in (("total", total), ("own", own)):
        lines.append(f"  by {title}:")
        for frame, count in counter.most_common(entries):
            lines.append(f"    {100 * count / samples:5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profiles", type=Path, nargs="+")
    parser.add_argument("--entries", type=int, default=25)
    args = parser.parse_args()
    for path in args.profiles:
        print(top(path, args.entries))


if __name__ == "__main__":
    main()
