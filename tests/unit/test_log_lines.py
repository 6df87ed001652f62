"""Processes sharing one log file (the workers of `serve --workers N`) never split each other's lines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

WRITER = """
import logging, structlog, sys
from service.logs import configure_logging
configure_logging("json", "info")
name = sys.argv[1]
for i in range(2000):
    structlog.get_logger().info("long", writer=name, i=i, body=name * 9_000)  # longer than any buffer
    logging.getLogger("lib").warning("%s", json.dumps({"writer": name, "i": i, "body": name * 9_000}))
"""


def test_long_lines_from_two_processes_stay_whole(tmp_path: Path) -> None:
    log = tmp_path / "shared.log"
    with log.open("ab") as out:
        writers = [
            subprocess.Popen([sys.executable, "-c", "import json\n" + WRITER, name], stdout=out, stderr=out)
            for name in ("a", "b")
        ]
        assert [w.wait(timeout=60) for w in writers] == [0, 0]
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * 2 * 2000
    # One structlog line and one standard-library line per writer and i, each whole.
    seen = Counter((entry["writer"], entry["i"], len(entry["body"])) for entry in map(json.loads, lines))
    assert seen == Counter({(w, i, 9_000): 2 for w in "ab" for i in range(2000)})
