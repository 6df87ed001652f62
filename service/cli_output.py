"""How a command prints its result: readable text and tables by default, one JSON document with --json.

Money goes out as both the exact integer (`*_nanos`) and its plain decimal (`*_usd`, a string), never a
float; times as ISO-8601 UTC.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    """Print `record` as JSON when the command was given --json, `text` otherwise."""
    if getattr(args, "json", False):
        json.dump(record, sys.stdout, default=_json_default, sort_keys=False)
        sys.stdout.write("\n")
    else:
        print(text)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def money(name: str, amount_nanos: int) -> dict[str, Any]:
    """`{name_nanos: 1500000000, name_usd: "1.500000000"}` for a JSON record."""
    from service.domain.money import format_usd

    return {f"{name}_nanos": amount_nanos, f"{name}_usd": format_usd(amount_nanos)}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns at the indexes in `right` aligned right."""
    widths = [max([len(headers[i]), *(len(row[i]) for row in rows)]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ]
        return "  ".join(padded).rstrip()

    return "\n".join(line(cells) for cells in (headers, *rows))
